# The commerce example's image: one binary, every service (`serve <service>`) and `provision`.
# Built in two stages so that the runtime image carries the binary and CA certificates only.
#
#   docker build -t eventflow-commerce .
#   docker run --rm eventflow-commerce --help
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p eventflow-commerce-example --features cloud \
    && cp target/release/eventflow-commerce-example /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 eventflow
COPY --from=build /usr/local/bin/eventflow-commerce-example /usr/local/bin/
USER eventflow
# Listen on every interface of the container; the ports are the services' defaults (3001-3008).
ENV HOST=0.0.0.0 LOG_FORMAT=json
ENTRYPOINT ["eventflow-commerce-example"]

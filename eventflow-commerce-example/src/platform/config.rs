//! Settings: flags override environment variables, which override the defaults. A wrong value
//! stops the process at start with one line naming the setting.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use eventflow_bus::Adapter;

use super::logging::LogFormat;

/// The services, in port order (3001..=3008 by default).
pub const SERVICES: [&str; 8] = [
    "identity",
    "catalog",
    "ordering",
    "payment",
    "inventory",
    "shipping",
    "notification",
    "saga",
];

const FIRST_PORT: u16 = 3001;
/// Used only in the default in-memory dev mode, which says so at start.
const DEV_JWT_SECRET: &str = "eventflow-dev-secret-do-not-use-in-production";

/// How the app runs: where it listens, its secrets and its business settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The address every service listens on.
    pub host: IpAddr,
    /// One port per entry of [`SERVICES`]; 0 picks a free one.
    pub ports: [u16; 8],
    /// The HS256 secret tokens are signed and verified with.
    pub jwt_secret: String,
    /// True when `jwt_secret` is the development default.
    pub dev_secret: bool,
    /// How long an issued token is valid.
    pub token_ttl: Duration,
    /// Payments above this many cents are declined.
    pub payment_max_order_cents: u64,
    /// How long an HTTP request may take before it is answered 503.
    pub request_timeout: Duration,
    /// Logins a minute for one username (after a burst of as many).
    pub login_attempts_per_account: u32,
    /// Logins a minute from one client address (after a burst of as many).
    pub login_attempts_per_address: u32,
    /// How log lines look.
    pub log_format: LogFormat,
    /// How long each send of a saga step waits for its reply before the step is resent.
    pub step_timeout: Duration,
    /// How many times a saga step is sent before it fails (the resend budget; the pivot and
    /// the steps after it are resent until they answer).
    pub step_sends: u32,
    /// Stock every seeded product with this many units instead of the seed's own numbers (load
    /// tests).
    pub seed_stock: Option<u64>,
    /// How long the notification queue hides a message being handled: a worker that dies
    /// holding one leaves it to another (or its restart) after this long.
    pub notification_visibility: Duration,
    /// A pause before each email is sent: the latency of a mail provider, for demos and for the
    /// crash tests (a worker killed while it holds a message).
    pub email_latency: Duration,
    /// The version the app reports: in the `x-app-version` header of every response and in the
    /// `eventflow_build_info` metric (`APP_VERSION`, else the crate's version). A canary's two
    /// deployments set different ones, so a traffic split can be seen from outside.
    pub app_version: String,
    /// What this process runs.
    pub role: Role,
    /// Where the contexts keep their data and exchange messages.
    pub backend: Backend,
}

/// What a process of the app runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// Every service, seeded (no subcommand).
    All,
    /// One service of a distributed deployment (`serve <service>`); nothing is seeded.
    Serve(&'static str),
    /// Create every table, bus resource, queue and subscription, seed the data, and exit
    /// (`provision`); running it again changes nothing.
    Provision,
}

impl Role {
    /// Whether this process writes the seed data (it runs every service).
    pub fn seeds(self) -> bool {
        matches!(self, Role::All | Role::Provision)
    }

    /// Whether this process runs `service`.
    pub fn runs(self, service: &str) -> bool {
        match self {
            Role::All | Role::Provision => true,
            Role::Serve(one) => one == service,
        }
    }
}

/// Where the contexts keep their data and exchange messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// In memory, in this process (`EVENT_BUS_ADAPTER` unset or `local`).
    Local,
    /// DynamoDB, and EventBridge + SQS or Google Pub/Sub (`EVENT_BUS_ADAPTER=eventbridge` or
    /// `pubsub`): the settings the cloud adapters read, as given.
    Cloud(CloudSettings),
}

/// The environment of the cloud backends: [`CLOUD_VARIABLES`] as set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CloudSettings {
    settings: BTreeMap<String, String>,
}

impl CloudSettings {
    /// The value of `variable`, if set and not blank.
    pub fn get(&self, variable: &str) -> Option<String> {
        self.settings.get(variable).cloned()
    }

    /// The events and meta tables of `service`: `EVENTFLOW_TABLE_PREFIX` (default `commerce-`)
    /// + the service + `-events` / `-meta`.
    pub fn tables_of(&self, service: &str) -> (String, String) {
        let prefix = self
            .get("EVENTFLOW_TABLE_PREFIX")
            .unwrap_or_else(|| "commerce-".to_owned());
        (
            format!("{prefix}{service}-events"),
            format!("{prefix}{service}-meta"),
        )
    }
}

/// The variables the cloud backends read.
pub const CLOUD_VARIABLES: [&str; 20] = [
    "EVENT_BUS_ADAPTER",
    "EVENT_BUS_NAME",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "PUBSUB_PROJECT_ID",
    "GOOGLE_CLOUD_PROJECT",
    "PUBSUB_TOPIC",
    "PUBSUB_EMULATOR_HOST",
    "EVENTFLOW_RESOURCE_PREFIX",
    "EVENTFLOW_PROVISION",
    "EVENTFLOW_TABLE_PREFIX",
    "WORK_QUEUE_ADAPTER",
    "EVENTFLOW_SQS_WAIT_SECONDS",
    "EVENTFLOW_SQS_VISIBILITY_SECONDS",
    "PUBSUB_ACK_DEADLINE_SECONDS",
];

/// The `--help` text.
pub const USAGE: &str = "\
eventflow-commerce-example: the commerce app.

Usage: eventflow-commerce-example [options]                  every service in this process
       eventflow-commerce-example [options] serve <service>  one service (distributed mode)
       eventflow-commerce-example [options] provision        create tables, bus resources and
                                                             queues, seed the data, exit

Options (each also read from the environment variable in brackets):
  --host ADDR                 address to listen on [HOST] (default 127.0.0.1)
  --port-offset N             add N to every port, for a second copy [PORT_OFFSET] (default 0)
  --<service>-port PORT       one service's port [<SERVICE>_PORT], services: identity 3001,
                              catalog 3002, ordering 3003, payment 3004, inventory 3005,
                              shipping 3006, notification 3007, saga 3008
  --jwt-secret SECRET         HS256 secret [JWT_SECRET] (default: a development secret)
  --payment-max-order-cents N decline orders above N cents [PAYMENT_MAX_ORDER_CENTS] (default 200000)
  --http-request-timeout-seconds N
                              how long a request may take before it is answered 503
                              [HTTP_REQUEST_TIMEOUT_SECONDS] (default 30)
  --login-attempts-per-account N
                              logins a minute for one username [LOGIN_ATTEMPTS_PER_ACCOUNT]
                              (default 10)
  --login-attempts-per-address N
                              logins a minute from one client address
                              [LOGIN_ATTEMPTS_PER_ADDRESS] (default 30)
  --saga-step-timeout-ms N    how long each send of a saga step waits for its reply before
                              it is resent [SAGA_STEP_TIMEOUT_MS] (default 10000)
  --saga-step-sends N         sends of a saga step before it fails and the order is cancelled
                              [SAGA_STEP_SENDS] (default 6: 91 s with the default timeout);
                              CompleteOrder, the pivot, is resent until it answers
  --notification-visibility-seconds N
                              how long a queued notification being handled stays hidden
                              [NOTIFICATION_VISIBILITY_SECONDS] (default 30)
  --email-latency-ms N        pause before each email, a mail provider's latency
                              [EMAIL_LATENCY_MS] (default 0)
  --log-format json|pretty    [LOG_FORMAT] (default json); --pretty is --log-format pretty
  --app-version VERSION       reported in every response's x-app-version header and in the
                              metrics [APP_VERSION] (default: the crate's version)
  -h, --help                  this text

Backends (environment only):
  EVENT_BUS_ADAPTER           local (default: in memory, one process), eventbridge or pubsub;
                              the last two keep every context's data in DynamoDB and need
                              the `cloud` feature, JWT_SECRET and AWS_REGION
  EVENT_BUS_NAME              eventbridge: the bus
  PUBSUB_PROJECT_ID           pubsub: the project (PUBSUB_TOPIC, PUBSUB_EMULATOR_HOST)
  AWS_ENDPOINT_URL            an emulator for every AWS service (moto);
  AWS_ENDPOINT_URL_DYNAMODB   one for DynamoDB only
  EVENTFLOW_TABLE_PREFIX      table names: <prefix><service>-events|-meta (default commerce-)
  EVENTFLOW_RESOURCE_PREFIX   prefix of queue, rule and subscription names
  EVENTFLOW_PROVISION         false: never create bus resources at start (use `provision`)
  EVENTFLOW_SQS_VISIBILITY_SECONDS
                              eventbridge: how long a message a dead process held stays
                              hidden (default 10)
  PUBSUB_ACK_DEADLINE_SECONDS pubsub: the same, the subscriptions' ack deadline (default 10)
  A saga step's budget (timeout x sends, plus the waits between sends) must be at least twice
  the last two: the app refuses to start otherwise, naming both.
";

/// What the command line asked for.
#[derive(Debug)]
pub enum Parsed {
    /// Run with this configuration.
    Run(Box<Config>),
    /// Print [`USAGE`].
    Help,
}

impl Config {
    /// Reads the environment through `env` and then `args` (without the program name). The error
    /// is one line naming the setting at fault.
    pub fn parse(
        env: impl Fn(&str) -> Option<String>,
        args: impl IntoIterator<Item = String>,
    ) -> Result<Parsed, String> {
        let Some((role, settings)) = command_line(args)? else {
            return Ok(Parsed::Help);
        };
        // An option wins over the environment; the last of one option wins.
        let get = |name: &str| {
            settings
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .or_else(|| env(name))
        };
        let host = match get("HOST") {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(h) => h
                .parse()
                .map_err(|_| format!("HOST={h:?} is not an IP address"))?,
        };
        let ports = ports(&get, &settings)?;
        let backend = backend(&get)?;
        if role != Role::All && backend == Backend::Local {
            return Err(
                "serve and provision are for the distributed mode: set EVENT_BUS_ADAPTER to \
                 eventbridge or pubsub (in memory, every service runs in one process)"
                    .into(),
            );
        }
        let (jwt_secret, dev_secret) = jwt_secret(get("JWT_SECRET"), &backend)?;
        if dev_secret && !host.is_loopback() {
            // Anyone can read the development secret and sign tokens with it.
            return Err(format!(
                "HOST={host} is reachable from other machines, and tokens are signed with the \
                 public development secret: set JWT_SECRET (32 characters or more)"
            ));
        }
        let log_format = match get("LOG_FORMAT").as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => return Err(format!("LOG_FORMAT={other:?}: use json or pretty")),
        };
        let app_version = app_version(get("APP_VERSION"))?;
        let setting = |name: &str, default| number(name, get(name), default);
        let positive = |name: &str, default| match number(name, get(name), default)? {
            0 => Err(format!("{name}=0: at least 1")),
            n => Ok(n),
        };
        Ok(Parsed::Run(Box::new(Config {
            host,
            ports,
            jwt_secret,
            dev_secret,
            token_ttl: Duration::from_secs(3600),
            payment_max_order_cents: setting("PAYMENT_MAX_ORDER_CENTS", 200_000)?,
            request_timeout: Duration::from_secs(u64::from(positive(
                "HTTP_REQUEST_TIMEOUT_SECONDS",
                30,
            )?)),
            login_attempts_per_account: positive("LOGIN_ATTEMPTS_PER_ACCOUNT", 10)?,
            login_attempts_per_address: positive("LOGIN_ATTEMPTS_PER_ADDRESS", 30)?,
            log_format,
            seed_stock: None,
            notification_visibility: Duration::from_secs(setting(
                "NOTIFICATION_VISIBILITY_SECONDS",
                30,
            )?),
            email_latency: Duration::from_millis(setting("EMAIL_LATENCY_MS", 0)?),
            app_version,
            role,
            backend,
            step_timeout: Duration::from_millis(setting("SAGA_STEP_TIMEOUT_MS", 10_000)?),
            step_sends: match number("SAGA_STEP_SENDS", get("SAGA_STEP_SENDS"), 6)? {
                0 => return Err("SAGA_STEP_SENDS=0: a step is sent at least once".into()),
                sends => sends,
            },
        })))
    }

    /// The defaults: the seed's ports on 127.0.0.1 and the development secret.
    pub fn dev() -> Config {
        match Config::parse(|_| None, []) {
            Ok(Parsed::Run(config)) => *config,
            _ => unreachable!("the defaults parse"),
        }
    }

    /// The defaults, with every port 0: the system picks free ones (tests, benchmarks).
    pub fn ephemeral() -> Config {
        Config {
            ports: [0; 8],
            ..Config::dev()
        }
    }

    pub(crate) fn port_of(&self, service: &str) -> u16 {
        SERVICES
            .iter()
            .position(|s| *s == service)
            .map_or(0, |i| self.ports[i])
    }
}

/// `--option value` settings, as `(VARIABLE, value)`, in command-line order.
type Settings = Vec<(String, String)>;

/// The role and the settings of the command line; `None` for `--help`.
fn command_line(
    args: impl IntoIterator<Item = String>,
) -> Result<Option<(Role, Settings)>, String> {
    let mut settings = Settings::new();
    let mut role = Role::All;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "serve" if role == Role::All => {
                let service = args.next().ok_or_else(|| {
                    format!("serve needs a service: one of {}", SERVICES.join(", "))
                })?;
                let known = SERVICES.iter().find(|s| **s == service).ok_or_else(|| {
                    format!(
                        "serve {service:?}: not a service; use one of {}",
                        SERVICES.join(", ")
                    )
                })?;
                role = Role::Serve(known);
            }
            "provision" if role == Role::All => role = Role::Provision,
            "--pretty" => settings.push(("LOG_FORMAT".into(), "pretty".into())),
            flag if flag.starts_with("--") => {
                let (name, value) = match flag.split_once('=') {
                    Some((name, value)) => (name.to_owned(), value.to_owned()),
                    None => {
                        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
                        (flag.to_owned(), value)
                    }
                };
                let variable = name[2..].replace('-', "_").to_ascii_uppercase();
                if !KNOWN.contains(&variable.as_str()) && !variable.ends_with("_PORT") {
                    return Err(format!("unknown option {name} (see --help)"));
                }
                settings.push((variable, value));
            }
            other => return Err(format!("unexpected argument {other:?} (see --help)")),
        }
    }
    Ok(Some((role, settings)))
}

/// A numeric setting, `default` when unset.
fn number<T: std::str::FromStr>(
    name: &str,
    value: Option<String>,
    default: T,
) -> Result<T, String> {
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid number")),
    }
}

/// Each service's port: its `{SERVICE}_PORT`, or the seed's port plus `PORT_OFFSET`. A
/// `--{name}-port` option of no service is refused.
fn ports(
    get: &impl Fn(&str) -> Option<String>,
    settings: &[(String, String)],
) -> Result<[u16; 8], String> {
    let offset: u16 = number("PORT_OFFSET", get("PORT_OFFSET"), 0)?;
    let mut ports = [0u16; 8];
    for (i, service) in SERVICES.iter().enumerate() {
        let name = format!("{}_PORT", service.to_ascii_uppercase());
        let base = FIRST_PORT + i as u16;
        ports[i] = match get(&name) {
            Some(v) => number(&name, Some(v), 0)?,
            None => base
                .checked_add(offset)
                .ok_or_else(|| format!("PORT_OFFSET={offset} puts {service} past port 65535"))?,
        };
    }
    if let Some(bad) = settings.iter().find(|(n, _)| {
        n.ends_with("_PORT")
            && !SERVICES
                .iter()
                .any(|s| format!("{}_PORT", s.to_ascii_uppercase()) == *n)
    }) {
        return Err(format!(
            "unknown option --{} (see --help)",
            bad.0.to_ascii_lowercase().replace('_', "-")
        ));
    }
    Ok(ports)
}

/// The token signing secret, and whether it is the development one (only in memory).
fn jwt_secret(secret: Option<String>, backend: &Backend) -> Result<(String, bool), String> {
    match secret {
        Some(secret) if secret.len() < 32 => {
            Err("JWT_SECRET must be at least 32 characters".into())
        }
        Some(secret) => Ok((secret, false)),
        None if *backend != Backend::Local => {
            Err("JWT_SECRET is required outside the in-memory dev mode".into())
        }
        None => Ok((DEV_JWT_SECRET.to_owned(), true)),
    }
}

/// The version to report: `APP_VERSION` when set and not blank, else the crate's. It goes into a
/// response header, so it must be a short run of visible ASCII characters.
fn app_version(value: Option<String>) -> Result<String, String> {
    let Some(version) = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) else {
        return Ok(env!("CARGO_PKG_VERSION").to_owned());
    };
    if version.len() > 64 || !version.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "APP_VERSION={version:?}: use up to 64 visible ASCII characters (it is sent in a header)"
        ));
    }
    Ok(version)
}

/// The backend the environment names; a missing required variable is named.
fn backend(get: &impl Fn(&str) -> Option<String>) -> Result<Backend, String> {
    let value = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    // The bus crate's parser is the one reading of the variable; the app adds what its backends
    // need beyond the bus.
    let adapter =
        Adapter::parse(value("EVENT_BUS_ADAPTER").as_deref()).map_err(|e| e.to_string())?;
    let required: &[&str] = match adapter {
        Adapter::Local => return Ok(Backend::Local),
        Adapter::EventBridge => &["EVENT_BUS_NAME"],
        _ => &[],
    };
    if !cfg!(feature = "cloud") {
        return Err(format!(
            "EVENT_BUS_ADAPTER={} needs the cloud backends: build with --features cloud",
            value("EVENT_BUS_ADAPTER").unwrap_or_default().trim()
        ));
    }
    for variable in required {
        if value(variable).is_none() {
            return Err(format!(
                "{variable} is required with EVENT_BUS_ADAPTER=eventbridge"
            ));
        }
    }
    if adapter == Adapter::PubSub
        && value("PUBSUB_PROJECT_ID")
            .or_else(|| value("GOOGLE_CLOUD_PROJECT"))
            .is_none()
    {
        return Err("PUBSUB_PROJECT_ID is required with EVENT_BUS_ADAPTER=pubsub".into());
    }
    if value("AWS_REGION")
        .or_else(|| value("AWS_DEFAULT_REGION"))
        .is_none()
    {
        return Err("AWS_REGION is required outside the in-memory dev mode (DynamoDB)".into());
    }
    let settings = CLOUD_VARIABLES
        .iter()
        .filter_map(|name| value(name).map(|v| ((*name).to_owned(), v.trim().to_owned())))
        .collect();
    Ok(Backend::Cloud(CloudSettings { settings }))
}

const KNOWN: [&str; 13] = [
    "HTTP_REQUEST_TIMEOUT_SECONDS",
    "LOGIN_ATTEMPTS_PER_ACCOUNT",
    "LOGIN_ATTEMPTS_PER_ADDRESS",
    "NOTIFICATION_VISIBILITY_SECONDS",
    "EMAIL_LATENCY_MS",
    "HOST",
    "PORT_OFFSET",
    "JWT_SECRET",
    "PAYMENT_MAX_ORDER_CENTS",
    "LOG_FORMAT",
    "SAGA_STEP_TIMEOUT_MS",
    "SAGA_STEP_SENDS",
    "APP_VERSION",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(env: &[(&str, &str)], args: &[&str]) -> Result<Config, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        match Config::parse(
            |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            args.iter().map(|a| (*a).to_owned()),
        )? {
            Parsed::Run(config) => Ok(*config),
            Parsed::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults_are_the_seed_ports_and_a_dev_secret() {
        let config = parse(&[], &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.ports,
            [3001, 3002, 3003, 3004, 3005, 3006, 3007, 3008]
        );
        assert!(config.dev_secret);
        assert_eq!(config.app_version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn the_app_version_comes_from_app_version_or_the_flag() {
        let config = parse(&[("APP_VERSION", "v2")], &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.app_version, "v2");
        let config = parse(&[("APP_VERSION", "v2")], &["--app-version", "v3"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.app_version, "v3");
        let blank = parse(&[("APP_VERSION", " ")], &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(blank.app_version, env!("CARGO_PKG_VERSION"));
        assert!(
            parse(&[("APP_VERSION", "v 2")], &[])
                .unwrap_err()
                .contains("APP_VERSION")
        );
    }

    #[test]
    fn the_development_secret_stays_on_loopback() {
        let refused = parse(&[("HOST", "0.0.0.0")], &[]).expect_err("refused");
        assert!(refused.contains("JWT_SECRET"), "{refused}");
        let secret = "a-secret-of-thirty-two-characters-at-least";
        assert!(parse(&[("HOST", "0.0.0.0"), ("JWT_SECRET", secret)], &[]).is_ok());
        assert!(parse(&[("HOST", "::1")], &[]).is_ok());
    }

    #[test]
    fn flags_override_the_environment() {
        let config = parse(
            &[("PORT_OFFSET", "100"), ("ORDERING_PORT", "9000")],
            &["--ordering-port", "9100", "--pretty"],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.port_of("identity"), 3101);
        assert_eq!(config.port_of("ordering"), 9100);
        assert_eq!(config.log_format, LogFormat::Pretty);
    }

    #[test]
    fn bad_settings_name_the_variable() {
        assert!(
            parse(&[("PORT_OFFSET", "x")], &[])
                .unwrap_err()
                .contains("PORT_OFFSET")
        );
        assert!(
            parse(&[("JWT_SECRET", "short")], &[])
                .unwrap_err()
                .contains("JWT_SECRET")
        );
        assert!(parse(&[], &["--nope", "1"]).unwrap_err().contains("--nope"));
        assert!(
            parse(&[("SAGA_STEP_SENDS", "0")], &[])
                .unwrap_err()
                .contains("SAGA_STEP_SENDS")
        );
        assert!(
            parse(&[], &["--bogus-port", "1"])
                .unwrap_err()
                .contains("--bogus-port")
        );
    }
}

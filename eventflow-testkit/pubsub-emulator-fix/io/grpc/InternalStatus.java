// A fix for Google's Pub/Sub emulator 0.8.20 (cloud-pubsub-emulator-0.8.20-all.jar), put on the
// classpath ahead of its jar by eventflow-testkit and scripts/dev-local.
//
// The jar bundles a grpc-core that calls InternalStatus.asRuntimeException(Status, Metadata,
// boolean) and a grpc-api whose InternalStatus lacks it. Every stream that ends without a clean
// close (a subscriber killed with SIGKILL) throws NoSuchMethodError in
// ServerCallImpl.closedInternal, the emulator never removes the dead stream, and the ordering keys
// it was serving stay assigned to it: their messages are never delivered again (4 of 10 keys in
// eventflow-bus's test, 94 s after the kill). With this class the emulator closes the stream, and
// the messages come back after their ack deadline, as on Pub/Sub itself.
package io.grpc;

/** grpc-api's InternalStatus with the method the bundled grpc-core calls. */
public final class InternalStatus {
  private InternalStatus() {}

  public static final Metadata.Key<String> MESSAGE_KEY = Status.MESSAGE_KEY;
  public static final Metadata.Key<Status> CODE_KEY = Status.CODE_KEY;

  public static StatusRuntimeException asRuntimeExceptionWithoutStacktrace(
      Status status, Metadata trailers) {
    return new StatusRuntimeException(status, trailers);
  }

  public static StatusRuntimeException asRuntimeException(
      Status status, Metadata trailers, boolean fillInStackTrace) {
    return new StatusRuntimeException(status, trailers);
  }
}

#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod definition;
mod error;
mod event;
mod index;
mod machine;
pub mod message;
mod orchestrator;
pub mod participant;
pub mod query;
mod state;
pub mod step_functions;
#[cfg(any(test, feature = "testkit"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;

pub use clock::{Clock, ManualClock, SystemClock};
pub use definition::{
    CommandBuilder, CommandDefinition, DEFAULT_RESEND, DEFAULT_TIMEOUT, SagaDefinition,
    SagaDefinitionBuilder, StepBuilder, StepDefinition,
};
pub use error::{Error, Result};
pub use event::{CompensationTarget, IndexEvent, SagaEvent, SagaOutcome};
/// How compensations are retried ([`SagaDefinitionBuilder::compensation_retry`]); eventflow's one backoff type.
pub use eventflow_core::Backoff;
pub use index::{COMPACT_EVERY, INDEX_SHARDS, SagaIndex, shard_of};
pub use machine::Disposition;
pub use message::{CommandKind, SagaCommand, idempotency_key};
pub use orchestrator::{
    Orchestrator, OrchestratorBuilder, OrchestratorStats, ResumeReport, SagaData, StartOutcome,
    TriggerFn,
};
pub use participant::{Participant, ParticipantReply, Refusal};
pub use query::{HistoryEntry, SagaQuery, SagaSummary};
pub use state::{
    CompensationPhase, CompensationState, SagaState, SagaStatus, StepState, StepStatus,
};
pub use step_functions::StepFunctionsOptions;

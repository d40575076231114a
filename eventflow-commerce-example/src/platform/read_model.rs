//! A projection's read model: documents by id, ordered by id. Projections own one collection
//! each and decide what goes in it; queries read copies.
//!
//! In one process each collection lives in memory (the core's `InMemoryDocumentStore`, with
//! DynamoDB's item size limit, so a document too large for the cloud fails here too). As separate
//! services they live in the context's DynamoDB meta table (`pk` = `doc#<collection>`, `sk` = the
//! id, the document as JSON and its version), next to the projection's checkpoints, so a
//! restarted or second instance serves the same answers and carries on where the projection
//! stopped; an update is a conditional write on the version, so two instances never lose each
//! other's changes.

// The contexts name the core's typed collection `Documents`; the alias keeps their code as it is.
pub(crate) use eventflow_core::documents::{Collection as Documents, DocumentStore};

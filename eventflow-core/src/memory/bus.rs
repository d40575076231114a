//! PLACEHOLDER: being written.
/// x
#[derive(Debug, Default)]
pub struct InMemoryBus;
/// x
#[derive(Debug, Default)]
pub struct InMemoryBusOptions;

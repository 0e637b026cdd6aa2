//! The data layer: plain types that every other layer of core speaks (the domain model, messages,
//! events and their destinations, device groups, firmware upgrades, shadows, API keys, topic categories) and the clock-free helpers
//! that go with them. Nothing here imports another part of core.

pub mod api_key;
pub mod device_group;
pub mod event;
pub mod message;
pub mod model;
pub mod ota;
pub mod sequence;
pub mod shadow;
pub mod topic_category;

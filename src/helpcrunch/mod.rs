//! HelpCrunch's REST API: types that accept every documented form, typed
//! errors, and the rate-limited client.

pub mod client;
mod context;
pub mod departments;
pub mod error;
pub mod redact;
pub mod retry_after;
pub mod search;
pub mod types;

pub use client::{Call, Client, ClientError};
pub use departments::{DepartmentRef, Departments};
pub use error::{ApiError, ErrorClass, ErrorEntry};
pub use search::{AgentChats, SearchError, SeenChat};

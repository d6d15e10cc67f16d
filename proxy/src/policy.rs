//! The policy model: what the control plane replicates and the data plane enforces.

mod api_key;
mod auth_guard;
mod consumer;
mod key_format;
mod name;
mod rate_limit;
mod role;
mod route;
mod snapshot;

pub use api_key::{ApiKey, KeyState};
pub use auth_guard::AuthGuard;
pub use consumer::Consumer;
pub use key_format::{
    digest_key, same_secret, GeneratedKey, KeyFormatError, KeyId, KeyIdError, ParsedKey, KEY_ID_LEN, KEY_LEN,
    KEY_PREFIX,
};
pub use name::{Name, NameError};
pub use rate_limit::{LimitMode, LimitSubject, RateLimitPolicy};
pub use role::{MethodSet, PathPattern, Permission, Role};
pub use route::{AuthMethod, Route};
pub use snapshot::Policy;

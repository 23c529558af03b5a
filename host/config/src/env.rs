//! Every environment variable the gateway reads, in one place.

/// Path of the configuration file (same as `--config`).
pub const CONFIG: &str = "WEIR_CONFIG";
/// Listen address of the data plane, overriding the configuration (same as `--listen`).
pub const LISTEN: &str = "WEIR_LISTEN";
/// Directory for the component cache and usage records (same as `--data-dir`).
pub const DATA_DIR: &str = "WEIR_DATA_DIR";
/// Directory for compiled components, instead of `<data dir>/cache` (same as `--cache-dir`).
pub const CACHE_DIR: &str = "WEIR_CACHE_DIR";
/// Log filter, e.g. `info,weir_server=debug` (tracing-subscriber syntax).
pub const LOG: &str = "WEIR_LOG";
/// Log format: `text` (default) or `json`.
pub const LOG_FORMAT: &str = "WEIR_LOG_FORMAT";
/// An admin bearer token for the controller API.
pub const ADMIN_TOKEN: &str = "WEIR_ADMIN_TOKEN";
/// `true`: production mode (same as `--production`): the controller needs real credentials.
pub const PRODUCTION: &str = "WEIR_PRODUCTION";

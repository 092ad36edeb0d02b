//! Why the configuration was refused (SPEC "Configuration": exit 2 with one line naming the
//! variable, never its value when it may be secret).

use super::vars::API_KEY_FILE;

/// A configuration error: always names the variable, never quotes a secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("{0}: is required (or set {file})", file = API_KEY_FILE.name)]
    Missing(&'static str),
    /// Neither a secret's variable nor its `_FILE` form is set, and the command needs it.
    #[error("{var}: is required (or set {file})")]
    MissingSecret {
        /// The variable.
        var: &'static str,
        /// Its `_FILE` form.
        file: &'static str,
    },
    /// A variable another one needs is not set.
    #[error("{var}: is required when {with} is set")]
    Required {
        /// The missing variable.
        var: &'static str,
        /// The variable that needs it.
        with: &'static str,
    },
    /// A variable is set but empty.
    #[error("{0}: must not be empty")]
    Empty(&'static str),
    /// A variable and its `_FILE` form are both set.
    #[error("{file}: cannot be used together with {inline}; set only one")]
    BothSources {
        /// The `_FILE` variable.
        file: &'static str,
        /// The variable it stands for.
        inline: &'static str,
    },
    /// A `_FILE` variable names a file that cannot be read.
    #[error("{var}: cannot read {path}: {reason}")]
    File {
        /// The variable.
        var: &'static str,
        /// The file it names.
        path: String,
        /// Why it cannot be read.
        reason: String,
    },
    /// A value that is not what the variable takes.
    #[error("{var}: {reason}, got {value:?}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// What it must be.
        reason: String,
        /// What it was.
        value: String,
    },
    /// A value that may hold a secret: the reason only.
    #[error("{var}: {reason}")]
    InvalidSecret {
        /// The variable.
        var: &'static str,
        /// What it must be.
        reason: String,
    },
    /// A value that is not valid UTF-8.
    #[error("{0}: is not valid UTF-8")]
    NotUtf8(&'static str),
    /// The environment itself could not be read.
    #[error("the environment could not be read: {0}")]
    Environment(String),
}

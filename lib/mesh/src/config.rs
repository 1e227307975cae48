//! Layered configuration: defaults < TOML file < `MOSAIC_*` environment < command-line flags.
//!
//! Nested keys use `__` in the environment: `MOSAIC_USER__ACCESS_TOKEN_TTL_SECS=600` sets
//! `user.access_token_ttl_secs`. A value of the wrong type stops the start with an error that
//! names the setting and where it came from.

use anyhow::anyhow;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Serialize, de::DeserializeOwned};
use std::path::Path;

/// A secret setting (password, key): readable by the code that needs it, never printed by
/// `Debug` or logs.
#[derive(Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Environment variable prefix.
pub const ENV_PREFIX: &str = "MOSAIC_";

/// The layered settings of a process: an optional TOML file, then the `MOSAIC_*`
/// environment, then `overrides` (typically the command-line flags that were given, as a
/// struct of `Option`s that skips `None`s when serialized). Every setting has a default in
/// its type, so a layer names only what it changes.
pub fn layers(file: Option<&Path>, overrides: &impl Serialize) -> anyhow::Result<Figment> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        if !path.exists() {
            return Err(anyhow!("configuration file {} does not exist (setting --config)", path.display()));
        }
        figment = figment.merge(Toml::file(path));
    }
    Ok(figment.merge(Env::prefixed(ENV_PREFIX).split("__")).merge(Serialized::defaults(overrides)))
}

/// Loads `T` from its defaults and [`layers`].
pub fn load<T>(file: Option<&Path>, overrides: &impl Serialize) -> anyhow::Result<T>
where
    T: DeserializeOwned + Serialize + Default,
{
    Figment::from(Serialized::defaults(T::default()))
        .merge(layers(file, overrides)?)
        .extract()
        .map_err(|e| explain(e, None))
}

pub(crate) fn explain(errors: figment::Error, section: Option<&str>) -> anyhow::Error {
    let mut msg = String::from("invalid configuration");
    for err in errors {
        let mut path: Vec<String> = section.map(|s| vec![s.to_owned()]).unwrap_or_default();
        path.extend(err.path.iter().cloned());
        let key = if path.is_empty() { "<root>".to_owned() } else { path.join(".") };
        let source = err.metadata.as_ref().map(|m| m.name.to_string()).unwrap_or_else(|| "defaults".to_owned());
        msg.push_str(&format!("\n  setting `{key}` (from {source}): {}", err.kind));
    }
    anyhow!(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Sample {
        http: String,
        inner: Inner,
    }

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Inner {
        limit: u32,
    }

    #[derive(Serialize)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        http: Option<String>,
    }

    #[test]
    fn flags_beat_the_file_and_bad_values_name_their_setting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mosaic.toml");
        std::fs::write(&path, "http = \"file\"\n[inner]\nlimit = \"many\"\n").unwrap();
        let err = load::<Sample>(Some(&path), &Flags { http: None }).unwrap_err().to_string();
        assert!(err.contains("inner.limit"), "{err}");

        std::fs::write(&path, "http = \"file\"\n[inner]\nlimit = 3\n").unwrap();
        let cfg: Sample = load(Some(&path), &Flags { http: Some("flag".into()) }).unwrap();
        assert_eq!(cfg.http, "flag");
        assert_eq!(cfg.inner.limit, 3);
    }
}

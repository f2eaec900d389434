//! Named environments of the CLI (`~/.config/nexus/config.toml`), like restate's and kubectl's
//! contexts: which Nexus to talk to and with which credentials, chosen with `--profile` (or
//! `NEXUS_PROFILE`), else the file's `current`, else the profile named `default`.
//!
//! ```toml
//! current = "local"
//!
//! [profiles.local]
//! addr = "http://127.0.0.1:50051"
//!
//! [profiles.prod]
//! addr = "https://nexus.example.com"
//! token_env = "NEXUS_PROD_TOKEN"   # the token is read from this variable
//! ca_file = "/etc/ssl/example-ca.pem"
//! timeout = "30s"
//! ```
//!
//! A flag or its variable (`--addr`/`NEXUS_ADDR`, `--token`/`NEXUS_TOKEN`, …) wins over the
//! profile, and the profile over the built-in defaults. A `token` written in the file itself is
//! refused unless only its owner can read the file (mode 0600), as ssh does with keys.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::{Target, exit::Invalid};

/// Where Nexus listens by default.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:50051";
/// How long a call may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The CLI's configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// The profile used when none is named.
    pub current: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// One environment.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub addr: Option<String>,
    /// The token itself (the file must then be private).
    pub token: Option<String>,
    /// The variable that holds the token.
    pub token_env: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// `30s`, `2m`.
    pub timeout: Option<String>,
    #[serde(default)]
    pub allow_plaintext_token: bool,
}

/// The settings a command connects with, after flags, variables, the profile and the defaults.
#[derive(Debug, Clone)]
pub struct Effective {
    pub addr: String,
    pub token: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub allow_plaintext_token: bool,
    /// The profile used, if any.
    pub profile: Option<String>,
}

/// The configuration file's path: `NEXUS_CLI_CONFIG`, else `$XDG_CONFIG_HOME/nexus/config.toml`,
/// else `~/.config/nexus/config.toml`.
pub fn path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(p) = env("NEXUS_CLI_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let base = match env("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env("HOME").filter(|p| !p.is_empty())?).join(".config"),
    };
    Some(base.join("nexus").join("config.toml"))
}

/// Largest configuration file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads the file at `path`; a missing file is an empty configuration.
pub fn load(path: &Path) -> anyhow::Result<(File, bool)> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((File::default(), false)),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if meta.len() > MAX_FILE_BYTES {
        bail!(Invalid(format!("{} is {} bytes; the limit is {MAX_FILE_BYTES}", path.display(), meta.len())));
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: File =
        toml::from_str(&text).map_err(|e| Invalid(format!("{}: {}", path.display(), e.to_string().trim_end())))?;
    Ok((file, private(&meta)))
}

#[cfg(unix)]
fn private(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o077 == 0
}

#[cfg(not(unix))]
fn private(_: &std::fs::Metadata) -> bool {
    true
}

/// Resolves what `target` connects with, reading the configuration file.
pub fn effective(target: &Target) -> anyhow::Result<Effective> {
    let env = |k: &str| std::env::var(k).ok();
    let (file, private, shown) = match path(&env) {
        Some(p) => {
            let (file, private) = load(&p)?;
            (file, private, p.display().to_string())
        }
        None => (File::default(), true, "~/.config/nexus/config.toml".into()),
    };
    resolve(target, &file, private, &shown, &env)
}

/// [`effective`], given the file's contents.
pub fn resolve(
    target: &Target,
    file: &File,
    private: bool,
    shown: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Effective> {
    let named = target.profile.clone().or_else(|| file.current.clone());
    let (profile, name) = match &named {
        Some(name) => match file.profiles.get(name) {
            Some(p) => (p.clone(), Some(name.clone())),
            None => {
                let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
                bail!(Invalid(format!(
                    "no profile `{name}` in {shown} (profiles: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                )));
            }
        },
        None => match file.profiles.get("default") {
            Some(p) => (p.clone(), Some("default".to_string())),
            None => (Profile::default(), None),
        },
    };
    let label = name.as_deref().unwrap_or("default");
    if profile.token.is_some() && !private {
        bail!(Invalid(format!(
            "{shown} holds a token (profile `{label}`) but others can read it: `chmod 600 {shown}`, or use token_env"
        )));
    }
    // The profile's token goes to the profile's server only: with --addr it is not even read.
    let profile_token = match (&profile.token, &profile.token_env) {
        _ if target.addr.is_some() || target.token.is_some() => None,
        (Some(_), Some(_)) => bail!(Invalid(format!("profile `{label}` in {shown}: set token or token_env, not both"))),
        (Some(t), None) => Some(t.clone()),
        (None, Some(var)) => match env(var).filter(|t| !t.is_empty()) {
            Some(t) => Some(t),
            None => bail!(Invalid(format!("profile `{label}` reads its token from ${var}, which is not set"))),
        },
        (None, None) => None,
    };
    let profile_timeout = match &profile.timeout {
        Some(t) => Some(
            nexus_server::parse_duration(t)
                .map_err(|e| Invalid(format!("profile `{label}` in {shown}: timeout `{t}`: {e}")))?,
        ),
        None => None,
    };
    Ok(Effective {
        addr: target.addr.clone().or(profile.addr).unwrap_or_else(|| DEFAULT_ADDR.to_string()),
        // A token from the command line or NEXUS_TOKEN; else the profile's (only when the profile
        // is the one addressed: a --addr of another server never gets the profile's token).
        token: target.token.clone().or(profile_token),
        ca_file: target.ca_file.clone().or(profile.ca_file),
        timeout: target.timeout.or(profile_timeout).unwrap_or(DEFAULT_TIMEOUT),
        allow_plaintext_token: target.allow_plaintext_token || profile.allow_plaintext_token,
        profile: name,
    })
}

/// `nexus profile list`: the profiles, the one in use marked.
pub fn list(target: &Target) -> anyhow::Result<()> {
    let env = |k: &str| std::env::var(k).ok();
    let Some(p) = path(&env) else { bail!("no configuration file: neither NEXUS_CLI_CONFIG nor HOME is set") };
    let (file, _) = load(&p)?;
    let current = target
        .profile
        .clone()
        .or(file.current.clone())
        .or_else(|| file.profiles.contains_key("default").then(|| "default".to_string()));
    if target.json {
        let profiles: Vec<_> = file
            .profiles
            .iter()
            .map(|(name, p)| {
                serde_json::json!({
                    "name": name, "addr": p.addr.as_deref().unwrap_or(DEFAULT_ADDR),
                    "current": current.as_deref() == Some(name.as_str()),
                    "token": p.token.is_some() || p.token_env.is_some(),
                })
            })
            .collect();
        say!("{}", serde_json::json!({"file": p.display().to_string(), "profiles": profiles}));
        return Ok(());
    }
    if file.profiles.is_empty() {
        say!("no profiles in {} (see `nexus profile --help`)", p.display());
        return Ok(());
    }
    say!("profiles in {}:", p.display());
    for (name, prof) in &file.profiles {
        let mark = if current.as_deref() == Some(name.as_str()) { "*" } else { " " };
        let auth = match (&prof.token, &prof.token_env) {
            (Some(_), _) => " (token in the file)".to_string(),
            (None, Some(var)) => format!(" (token from ${var})"),
            (None, None) => String::new(),
        };
        say!("{mark} {name:<16} {}{auth}", prof.addr.as_deref().unwrap_or(DEFAULT_ADDR));
    }
    Ok(())
}

/// `nexus profile show`: what a command would connect with (the token redacted).
pub fn show(target: &Target) -> anyhow::Result<()> {
    let e = effective(target)?;
    let token = e.token.as_ref().map(|_| "(set)");
    if target.json {
        say!(
            "{}",
            serde_json::json!({
                "profile": e.profile, "addr": e.addr, "token": token.is_some(),
                "ca_file": e.ca_file.map(|p| p.display().to_string()),
                "timeout_ms": u64::try_from(e.timeout.as_millis()).unwrap_or(u64::MAX),
                "allow_plaintext_token": e.allow_plaintext_token,
            })
        );
        return Ok(());
    }
    say!("profile  {}", e.profile.as_deref().unwrap_or("(none: built-in defaults)"));
    say!("addr     {}", e.addr);
    say!("token    {}", token.unwrap_or("(none)"));
    if let Some(ca) = &e.ca_file {
        say!("ca_file  {}", ca.display());
    }
    say!("timeout  {:?}", e.timeout);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            addr: None,
            json: false,
            token: None,
            ca_file: None,
            allow_plaintext_token: false,
            timeout: None,
            profile: None,
        }
    }

    fn file(text: &str) -> File {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    const FILE: &str = r#"
current = "prod"
[profiles.local]
addr = "http://127.0.0.1:50051"
[profiles.prod]
addr = "https://nexus.example.com"
token_env = "PROD_TOKEN"
timeout = "1m30s"
[profiles.inline]
addr = "https://other.example.com"
token = "k.secret"
"#;

    fn env(k: &str) -> Option<String> {
        (k == "PROD_TOKEN").then(|| "from-env".to_string())
    }

    #[test]
    fn flags_win_over_the_profile_and_the_profile_over_the_defaults() {
        let f = file(FILE);
        let e = resolve(&target(), &f, true, "config.toml", &env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.profile.as_deref(), Some("prod"));
        assert_eq!(e.addr, "https://nexus.example.com");
        assert_eq!(e.token.as_deref(), Some("from-env"));
        assert_eq!(e.timeout, Duration::from_secs(90));

        let local = Target { profile: Some("local".into()), ..target() };
        let e = resolve(&local, &f, true, "config.toml", &env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((e.addr.as_str(), e.token, e.timeout), ("http://127.0.0.1:50051", None, DEFAULT_TIMEOUT));

        // --addr of another server: the profile's token is not sent there.
        let elsewhere = Target { addr: Some("http://10.0.0.9:50051".into()), ..target() };
        let e = resolve(&elsewhere, &f, true, "config.toml", &env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((e.addr.as_str(), e.token), ("http://10.0.0.9:50051", None));

        let flagged = Target { token: Some("flag".into()), timeout: Some(Duration::from_secs(5)), ..target() };
        let e = resolve(&flagged, &f, true, "config.toml", &env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((e.token.as_deref(), e.timeout), (Some("flag"), Duration::from_secs(5)));

        // No file at all: the built-in defaults.
        let e = resolve(&target(), &File::default(), true, "config.toml", &env).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((e.addr.as_str(), e.profile), (DEFAULT_ADDR, None));
    }

    #[test]
    fn mistakes_are_named() {
        let f = file(FILE);
        let err = |t: Target, f: &File, private: bool, env: &dyn Fn(&str) -> Option<String>| {
            resolve(&t, f, private, "config.toml", env).err().map(|e| e.to_string()).unwrap_or_default()
        };
        let unknown = err(Target { profile: Some("staging".into()), ..target() }, &f, true, &env);
        assert!(unknown.contains("no profile `staging`") && unknown.contains("inline, local, prod"), "{unknown}");
        let readable = err(Target { profile: Some("inline".into()), ..target() }, &f, false, &env);
        assert!(readable.contains("chmod 600"), "{readable}");
        let unset = err(target(), &f, true, &|_| None);
        assert!(unset.contains("$PROD_TOKEN, which is not set"), "{unset}");
        let bad = file("[profiles.default]\ntimeout = \"soon\"\n");
        assert!(err(target(), &bad, true, &env).contains("timeout `soon`"));
        assert!(toml::from_str::<File>("[profiles.x]\nadress = \"typo\"\n").is_err(), "unknown keys are refused");
    }
}

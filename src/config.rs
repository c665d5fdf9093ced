//! The agent's configuration file (TOML): raw serde structs that refuse unknown keys, turned
//! into validated settings; every error reads `file:line:col: what is wrong`.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:8080"
//! data_dir = "/var/lib/masv-agent"
//! cloud_url = "https://api.massive.app/v1"
//! api_key = { env = "MASV_API_KEY" }    # or { file = "/etc/masv-agent/api-key" }
//! auto_resume = true
//! auto_finalize = true
//! chunk_size = "16MiB"                  # downloads' range size
//! max_connections = 16
//! ```

mod size;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use size::parse_size;

use crate::cloud::dto::{Secret, SecretSource};

/// A validated configuration.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub server: ServerConfig,
}

/// `[server]`: what `masv server start` flags also set (flags win over the file).
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub cloud_url: Option<String>,
    pub api_key: Option<Secret>,
    pub auto_resume: Option<bool>,
    pub auto_finalize: Option<bool>,
    pub chunk_size: Option<u64>,
    pub max_connections: Option<usize>,
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Every problem found in a file, in file order.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<String>>,
    data_dir: Option<PathBuf>,
    cloud_url: Option<Spanned<String>>,
    api_key: Option<Spanned<SecretSource>>,
    auto_resume: Option<bool>,
    auto_finalize: Option<bool>,
    chunk_size: Option<Spanned<SizeValue>>,
    max_connections: Option<Spanned<usize>>,
}

/// A size written as bytes or as text like `"16MiB"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

/// Turns byte offsets into `file:line:col` errors.
struct Located<'a> {
    path: &'a Path,
    text: &'a str,
    errors: Vec<ConfigError>,
}

impl Located<'_> {
    fn error(&mut self, offset: usize, message: impl Into<String>) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.chars().rev().take_while(|c| *c != '\n').count() + 1;
        self.errors.push(ConfigError {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        });
    }
}

/// Reads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    parse(path, &text)
}

/// Validates configuration `text` read from `path` (named in errors).
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let mut at = Located {
        path,
        text,
        errors: Vec::new(),
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            at.error(offset, e.message().trim().to_owned());
            return Err(ConfigErrors(at.errors));
        }
    };
    let server = server(raw.server, &mut at);
    if at.errors.is_empty() {
        Ok(Config { server })
    } else {
        at.errors.sort_by_key(|e| (e.line, e.column));
        Err(ConfigErrors(at.errors))
    }
}

fn server(raw: RawServer, at: &mut Located<'_>) -> ServerConfig {
    let listen = raw
        .listen
        .and_then(|l| match l.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                at.error(
                    l.span().start,
                    format!(
                        "listen = {:?} is not an address like 127.0.0.1:8080",
                        l.get_ref()
                    ),
                );
                None
            }
        });
    let cloud_url = raw
        .cloud_url
        .and_then(|u| match url::Url::parse(u.get_ref()) {
            Ok(_) => Some(u.into_inner()),
            Err(e) => {
                at.error(
                    u.span().start,
                    format!("cloud_url = {:?} is not a URL ({e})", u.get_ref()),
                );
                None
            }
        });
    let api_key = raw.api_key.and_then(|k| match k.get_ref().resolve() {
        Ok(secret) => Some(secret),
        Err(e) => {
            at.error(k.span().start, format!("api_key: {e}"));
            None
        }
    });
    let chunk_size = raw.chunk_size.and_then(|c| {
        let bytes = match c.get_ref() {
            SizeValue::Bytes(b) => Ok(*b),
            SizeValue::Text(t) => parse_size(t),
        };
        match bytes {
            Ok(0) => {
                at.error(c.span().start, "chunk_size must be more than 0 bytes");
                None
            }
            Ok(b) => Some(b),
            Err(e) => {
                at.error(c.span().start, format!("chunk_size: {e}"));
                None
            }
        }
    });
    let max_connections = raw.max_connections.and_then(|m| {
        if *m.get_ref() == 0 {
            at.error(m.span().start, "max_connections must be at least 1");
            None
        } else {
            Some(m.into_inner())
        }
    });
    ServerConfig {
        listen,
        data_dir: raw.data_dir,
        cloud_url,
        api_key,
        auto_resume: raw.auto_resume,
        auto_finalize: raw.auto_finalize,
        chunk_size,
        max_connections,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_section_is_read_with_sizes_and_secrets() {
        let config = parse(
            Path::new("agent.toml"),
            r#"
[server]
listen = "127.0.0.1:9090"
cloud_url = "http://127.0.0.1:9000/v1"
api_key = { env = "CARGO_PKG_NAME" }
chunk_size = "8MiB"
max_connections = 4
auto_finalize = false
"#,
        )
        .unwrap();
        assert_eq!(config.server.listen.unwrap().port(), 9090);
        assert_eq!(config.server.chunk_size, Some(8 << 20));
        assert_eq!(config.server.api_key.unwrap().expose(), "masv-agent");
        assert_eq!(config.server.auto_finalize, Some(false));
    }

    #[test]
    fn errors_name_file_line_and_column_all_at_once() {
        let errors = parse(
            Path::new("agent.toml"),
            "[server]\nlisten = \"nowhere\"\nchunk_size = \"lots\"\nmax_connections = 0\napi_key = { env = \"MASV_TEST_UNSET_VARIABLE\" }\n",
        )
        .unwrap_err();
        let text = errors.to_string();
        assert_eq!(errors.0.len(), 4, "{text}");
        assert!(
            text.contains("agent.toml:2:10: listen = \"nowhere\""),
            "{text}"
        );
        assert!(text.contains("agent.toml:3:14: chunk_size"), "{text}");
        assert!(text.contains("agent.toml:4:19: max_connections"), "{text}");
        assert!(
            text.contains(
                "agent.toml:5:11: api_key: environment variable MASV_TEST_UNSET_VARIABLE"
            ),
            "{text}"
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_their_place() {
        let errors = parse(
            Path::new("a.toml"),
            "[server]\nlisten = \"127.0.0.1:1\"\nmax_conections = 3\n",
        )
        .unwrap_err();
        let text = errors.to_string();
        assert!(
            text.starts_with("a.toml:3:1: unknown field `max_conections`"),
            "{text}"
        );
    }
}

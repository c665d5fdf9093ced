//! The two files of an ASC MHL history, written and read: a generation's hash list
//! (`NNNN_NAME_DATE.mhl`, namespace `urn:ASC:MHL:v2.0`) and the chain (`ascmhl_chain.xml`,
//! `urn:ASC:MHL:DIRECTORY:v2.0`) that names each generation with the C4 ID of its bytes.
//! Element order follows the specification's XSD, which the tests check with the reference tool.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

use super::hash::HashFormat;

/// One digest of a file, with what the generation did with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHash {
    pub format: HashFormat,
    pub digest: String,
    /// `original`, `verified`, `failed` (absent in hand-written lists).
    pub action: Option<String>,
}

/// A folder's content and structure hashes in one format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirHash {
    pub format: HashFormat,
    pub content: String,
    pub structure: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File {
        /// Relative to the history's root, `/`-separated.
        path: String,
        size: u64,
        modified: Option<DateTime<Utc>>,
        hashes: Vec<FileHash>,
    },
    Dir {
        path: String,
        modified: Option<DateTime<Utc>>,
        hashes: Vec<DirHash>,
    },
}

/// One generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashList {
    pub created: DateTime<Utc>,
    pub hostname: String,
    pub tool_version: String,
    /// `in-place` (sealed where the files are) or `transfer` (sealed as they were sent).
    pub process: String,
    pub root: Vec<DirHash>,
    pub ignore: Vec<String>,
    pub entries: Vec<Entry>,
}

/// A generation named in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    pub sequence: u32,
    pub file: String,
    pub c4: String,
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn date(d: DateTime<Utc>) -> String {
    d.to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn dir_hashes(out: &mut String, indent: &str, hashes: &[DirHash], hashdate: &str) {
    for part in ["content", "structure"] {
        let _ = writeln!(out, "{indent}<{part}>");
        for h in hashes {
            let digest = if part == "content" {
                &h.content
            } else {
                &h.structure
            };
            let _ = writeln!(
                out,
                "{indent}  <{f} hashdate=\"{hashdate}\">{digest}</{f}>",
                f = h.format
            );
        }
        let _ = writeln!(out, "{indent}</{part}>");
    }
}

impl HashList {
    pub fn to_xml(&self) -> String {
        let hashdate = self.created.to_rfc3339_opts(SecondsFormat::Micros, false);
        let mut out = String::new();
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str("<hashlist version=\"2.0\" xmlns=\"urn:ASC:MHL:v2.0\">\n");
        out.push_str("  <creatorinfo>\n");
        let _ = writeln!(
            out,
            "    <creationdate>{}</creationdate>",
            date(self.created)
        );
        let _ = writeln!(out, "    <hostname>{}</hostname>", escape(&self.hostname));
        let _ = writeln!(
            out,
            "    <tool version=\"{}\">masv-agent</tool>",
            escape(&self.tool_version)
        );
        out.push_str("  </creatorinfo>\n");
        out.push_str("  <processinfo>\n");
        let _ = writeln!(out, "    <process>{}</process>", escape(&self.process));
        if !self.root.is_empty() {
            out.push_str("    <roothash>\n");
            dir_hashes(&mut out, "      ", &self.root, &hashdate);
            out.push_str("    </roothash>\n");
        }
        out.push_str("    <ignore>\n");
        for p in &self.ignore {
            let _ = writeln!(out, "      <pattern>{}</pattern>", escape(p));
        }
        out.push_str("    </ignore>\n");
        out.push_str("  </processinfo>\n");
        out.push_str("  <hashes>\n");
        for entry in &self.entries {
            match entry {
                Entry::File {
                    path,
                    size,
                    modified,
                    hashes,
                } => {
                    out.push_str("    <hash>\n");
                    let modified = modified
                        .map(|m| format!(" lastmodificationdate=\"{}\"", date(m)))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "      <path size=\"{size}\"{modified}>{}</path>",
                        escape(path)
                    );
                    for h in hashes {
                        let action = h
                            .action
                            .as_ref()
                            .map(|a| format!(" action=\"{}\"", escape(a)))
                            .unwrap_or_default();
                        let _ = writeln!(
                            out,
                            "      <{f}{action} hashdate=\"{hashdate}\">{}</{f}>",
                            h.digest,
                            f = h.format
                        );
                    }
                    out.push_str("    </hash>\n");
                }
                Entry::Dir {
                    path,
                    modified,
                    hashes,
                } => {
                    out.push_str("    <directoryhash>\n");
                    let modified = modified
                        .map(|m| format!(" lastmodificationdate=\"{}\"", date(m)))
                        .unwrap_or_default();
                    let _ = writeln!(out, "      <path{modified}>{}</path>", escape(path));
                    dir_hashes(&mut out, "      ", hashes, &hashdate);
                    out.push_str("    </directoryhash>\n");
                }
            }
        }
        out.push_str("  </hashes>\n");
        out.push_str("</hashlist>\n");
        out
    }

    /// Reads what verification needs: files with their hashes, and the ignore patterns.
    pub fn parse(text: &str) -> Result<HashList, String> {
        let doc = roxmltree::Document::parse(text).map_err(|e| e.to_string())?;
        let root = doc.root_element();
        if root.tag_name().name() != "hashlist" {
            return Err(format!(
                "the root element is <{}>, not <hashlist>",
                root.tag_name().name()
            ));
        }
        let creator = child(root, "creatorinfo");
        let process = child(root, "processinfo");
        let created = creator
            .and_then(|c| child(c, "creationdate"))
            .and_then(|d| d.text())
            .and_then(|d| DateTime::parse_from_rfc3339(d.trim()).ok())
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default();
        let ignore = process
            .and_then(|p| child(p, "ignore"))
            .map(|i| {
                i.children()
                    .filter(|c| c.tag_name().name() == "pattern")
                    .map(|c| text_of(Some(c)))
                    .collect()
            })
            .unwrap_or_default();
        let mut entries = Vec::new();
        if let Some(hashes) = child(root, "hashes") {
            for h in hashes.children().filter(|c| c.tag_name().name() == "hash") {
                let path_node = child(h, "path");
                let path = text_of(path_node);
                if path.is_empty() {
                    return Err("a <hash> has no <path>".into());
                }
                let size = path_node
                    .and_then(|p| p.attribute("size"))
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_default();
                let hashes = h
                    .children()
                    .filter_map(|c| {
                        let format = HashFormat::parse(c.tag_name().name())?;
                        Some(FileHash {
                            format,
                            digest: text_of(Some(c)),
                            action: c.attribute("action").map(str::to_string),
                        })
                    })
                    .collect();
                entries.push(Entry::File {
                    path,
                    size,
                    modified: None,
                    hashes,
                });
            }
        }
        Ok(HashList {
            created,
            hostname: text_of(creator.and_then(|c| child(c, "hostname"))),
            tool_version: String::new(),
            process: text_of(process.and_then(|p| child(p, "process"))),
            root: Vec::new(),
            ignore,
            entries,
        })
    }
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

fn text_of(node: Option<roxmltree::Node<'_, '_>>) -> String {
    node.and_then(|n| n.text())
        .unwrap_or_default()
        .trim()
        .to_string()
}

pub fn chain_to_xml(links: &[ChainLink]) -> String {
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str("<ascmhldirectory xmlns=\"urn:ASC:MHL:DIRECTORY:v2.0\">\n");
    for l in links {
        let _ = writeln!(out, "  <hashlist sequencenr=\"{}\">", l.sequence);
        let _ = writeln!(out, "    <path>{}</path>", escape(&l.file));
        let _ = writeln!(out, "    <c4>{}</c4>", l.c4);
        out.push_str("  </hashlist>\n");
    }
    out.push_str("</ascmhldirectory>\n");
    out
}

pub fn parse_chain(text: &str) -> Result<Vec<ChainLink>, String> {
    let doc = roxmltree::Document::parse(text).map_err(|e| e.to_string())?;
    let mut links = Vec::new();
    for h in doc
        .root_element()
        .children()
        .filter(|c| c.tag_name().name() == "hashlist")
    {
        let field = |name: &str| {
            h.children()
                .find(|c| c.tag_name().name() == name)
                .and_then(|c| c.text())
                .map(|t| t.trim().to_string())
                .ok_or_else(|| format!("a chain entry has no <{name}>"))
        };
        let sequence = h
            .attribute("sequencenr")
            .and_then(|s| s.parse().ok())
            .ok_or("a chain entry has no sequencenr")?;
        links.push(ChainLink {
            sequence,
            file: field("path")?,
            c4: field("c4")?,
        });
    }
    links.sort_by_key(|l| l.sequence);
    Ok(links)
}

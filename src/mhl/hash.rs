//! The hash formats of ASC MHL v2 and their text forms: hex for md5, sha1 and the xxHash family,
//! base58 "C4 ID" for c4 (SHA-512), exactly as the ASC's reference implementation writes them.

use std::fmt;
use std::io::Read;
use std::path::Path;

use sha2::Digest as _;

/// A hash format: those of ASC MHL v2, by their element name in a `.mhl` file, and SHA-256
/// (which ASC MHL does not list: a file hashed so can be recorded, not sealed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashFormat {
    Md5,
    Sha1,
    Xxh64,
    Xxh3,
    Xxh128,
    C4,
    Sha256,
}

impl HashFormat {
    /// The formats an ASC MHL file may hold.
    pub const ALL: [HashFormat; 6] = [
        HashFormat::Md5,
        HashFormat::Sha1,
        HashFormat::Xxh64,
        HashFormat::Xxh3,
        HashFormat::Xxh128,
        HashFormat::C4,
    ];

    /// Any format, SHA-256 included (`sha256`), by name.
    pub fn parse_any(name: &str) -> Option<HashFormat> {
        HashFormat::parse(name).or((name == "sha256").then_some(HashFormat::Sha256))
    }

    /// The element name: `xxh64`, `md5`…
    pub fn name(self) -> &'static str {
        match self {
            HashFormat::Md5 => "md5",
            HashFormat::Sha1 => "sha1",
            HashFormat::Xxh64 => "xxh64",
            HashFormat::Xxh3 => "xxh3",
            HashFormat::Xxh128 => "xxh128",
            HashFormat::C4 => "c4",
            HashFormat::Sha256 => "sha256",
        }
    }

    /// An ASC MHL format, by name.
    pub fn parse(name: &str) -> Option<HashFormat> {
        HashFormat::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The bytes a digest string stands for (what directory hashes are computed over).
    pub fn digest_bytes(self, digest: &str) -> Option<Vec<u8>> {
        match self {
            HashFormat::C4 => c4_decode(digest),
            _ => hex::decode(digest).ok(),
        }
    }
}

impl fmt::Display for HashFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A running hash of one format, fed as bytes move.
pub struct Hasher(State);

enum State {
    Md5(crate::md5s::Md5),
    Sha1(sha1::Sha1),
    Xxh64(xxhash_rust::xxh64::Xxh64),
    Xxh3(Box<xxhash_rust::xxh3::Xxh3>),
    Xxh128(Box<xxhash_rust::xxh3::Xxh3>),
    C4(sha2::Sha512),
    Sha256(sha2::Sha256),
}

impl Hasher {
    pub fn new(format: HashFormat) -> Hasher {
        Hasher(match format {
            HashFormat::Md5 => State::Md5(crate::md5s::Md5::new()),
            HashFormat::Sha1 => State::Sha1(sha1::Sha1::new()),
            HashFormat::Xxh64 => State::Xxh64(xxhash_rust::xxh64::Xxh64::new(0)),
            HashFormat::Xxh3 => State::Xxh3(Box::default()),
            HashFormat::Xxh128 => State::Xxh128(Box::default()),
            HashFormat::C4 => State::C4(sha2::Sha512::new()),
            HashFormat::Sha256 => State::Sha256(sha2::Sha256::new()),
        })
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.0 {
            State::Md5(h) => h.update(bytes),
            State::Sha1(h) => h.update(bytes),
            State::Xxh64(h) => h.update(bytes),
            State::Xxh3(h) | State::Xxh128(h) => h.update(bytes),
            State::C4(h) => h.update(bytes),
            State::Sha256(h) => h.update(bytes),
        }
    }

    /// The digest as ASC MHL writes it.
    pub fn finish(self) -> String {
        match self.0 {
            State::Md5(mut h) => hex::encode(h.finalize()),
            State::Sha1(h) => hex::encode(h.finalize()),
            State::Xxh64(h) => format!("{:016x}", h.digest()),
            State::Xxh3(h) => format!("{:016x}", h.digest()),
            State::Xxh128(h) => format!("{:032x}", h.digest128()),
            State::C4(h) => c4_encode(&h.finalize()),
            State::Sha256(h) => hex::encode(h.finalize()),
        }
    }
}

/// The digest of `bytes`.
pub fn hash_data(format: HashFormat, bytes: &[u8]) -> String {
    let mut h = Hasher::new(format);
    h.update(bytes);
    h.finish()
}

/// The digest of a file's contents, read once in 1 MiB pieces.
pub fn hash_file(path: &Path, format: HashFormat) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut h = Hasher::new(format);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

/// A directory's hash over its children's hashes: the digests' bytes, sorted by their text, fed in
/// order (the reference implementation's `hash_of_hash_list`).
pub fn hash_of_list(format: HashFormat, mut digests: Vec<String>) -> String {
    digests.sort();
    let mut h = Hasher::new(format);
    for d in &digests {
        h.update(&format.digest_bytes(d).unwrap_or_default());
    }
    h.finish()
}

const C4_ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const C4_LEN: usize = 90;

/// A SHA-512 digest as a C4 ID: "c4" and the 512-bit number in base 58, padded to 90 characters.
fn c4_encode(digest: &[u8]) -> String {
    let mut number = digest.to_vec();
    let mut out = Vec::new();
    while number.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for byte in number.iter_mut() {
            let acc = (rem << 8) | u32::from(*byte);
            *byte = (acc / 58) as u8;
            rem = acc % 58;
        }
        out.push(C4_ALPHABET[rem as usize]);
    }
    while out.len() < C4_LEN - 2 {
        out.push(b'1');
    }
    out.reverse();
    format!(
        "c4{}",
        String::from_utf8(out).expect("the alphabet is ASCII")
    )
}

fn c4_decode(id: &str) -> Option<Vec<u8>> {
    let digits = id.strip_prefix("c4").filter(|d| d.len() == C4_LEN - 2)?;
    let mut number = vec![0u8; 64];
    for c in digits.bytes() {
        let mut carry = C4_ALPHABET.iter().position(|&a| a == c)? as u32;
        for byte in number.iter_mut().rev() {
            let acc = u32::from(*byte) * 58 + carry;
            *byte = acc as u8;
            carry = acc >> 8;
        }
        if carry != 0 {
            return None;
        }
    }
    Some(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Digests of b"hello\n" as the reference implementation (Python's hashlib/xxhash) prints them.
    #[test]
    fn digests_match_the_reference_text_forms() {
        let data = b"hello\n";
        assert_eq!(
            hash_data(HashFormat::Md5, data),
            "b1946ac92492d2347c6235b4d2611184"
        );
        assert_eq!(
            hash_data(HashFormat::Sha1, data),
            "f572d396fae9206628714fb2ce00f72e94f2258f"
        );
        assert_eq!(hash_data(HashFormat::Xxh64, data), "e4c191d091bd8853");
        assert_eq!(hash_data(HashFormat::Xxh3, data), "99fc819aaba2462a");
        assert_eq!(
            hash_data(HashFormat::Sha256, data),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        assert_eq!(
            hash_data(HashFormat::Xxh128, data),
            "6bba86c7e069f56d5a10b435f1c8e49c"
        );
        assert_eq!(
            hash_data(HashFormat::C4, b""),
            "c459dsjfscH38cYeXXYogktxf4Cd9ibshE3BHUo6a58hBXmRQdZrAkZzsWcbWtDg5oQstpDuni4Hirj75GEmTc1sFT"
        );
    }

    #[test]
    fn c4_ids_round_trip_and_have_the_fixed_length() {
        for data in [&b""[..], b"hello\n", &[0u8; 100]] {
            let id = hash_data(HashFormat::C4, data);
            assert_eq!(id.len(), 90, "{id}");
            assert!(id.starts_with("c4"));
            let bytes = HashFormat::C4.digest_bytes(&id).unwrap();
            assert_eq!(c4_encode(&bytes), id);
        }
        assert_eq!(HashFormat::C4.digest_bytes("c4xyz"), None);
    }
}

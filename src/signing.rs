//! Signed log records: who may deploy where, and proof of who did.
//!
//! A record's chain `hash` (64 hex digits, as ASCII bytes) is signed in OpenSSH's SSHSIG format
//! (`ssh-keygen -Y sign`) under the namespace `envlock-log@<environment>`, so a signature made
//! for one environment never passes for another, nor as a git or any other SSHSIG signature.
//! The key comes from `ENVLOCK_SIGNING_KEY` (a private key file, CI's secret store) or the
//! ssh-agent (`SSH_AUTH_SOCK`); never from a flag. The repository file `allowed_signers`
//! (OpenSSH's format) says which key may sign for which environment: its `namespaces` option
//! lists them, and a key without that option may sign for none.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};

/// The file at the root of the configuration repository.
pub const ALLOWED_SIGNERS: &str = "allowed_signers";
/// The variable naming a private key file to sign with (else the ssh-agent).
pub const KEY_VARIABLE: &str = "ENVLOCK_SIGNING_KEY";

/// The SSHSIG namespace of an environment's log records.
pub fn namespace(environment: &str) -> String {
    format!("envlock-log@{environment}")
}

/// One line of `allowed_signers`.
#[derive(Clone, Debug)]
pub struct Signer {
    /// 1-based line in the file.
    pub line: usize,
    pub principals: String,
    /// The `namespaces` option's patterns; `None`: no option, so no environment.
    pub namespaces: Option<String>,
    pub key: PublicKey,
    pub fingerprint: String,
}

/// The parsed `allowed_signers` file.
#[derive(Clone, Debug, Default)]
pub struct AllowedSigners {
    pub signers: Vec<Signer>,
}

/// A problem in `allowed_signers`, at a 1-based line and column.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("{ALLOWED_SIGNERS}:{line}:{col}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// What `allowed_signers` says about a key and an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed: the principals of the line that allows it.
    Allowed(String),
    /// Listed, but not for this environment (the principals of its first line).
    NotForEnvironment(String),
    /// Not listed at all.
    Unknown,
}

impl AllowedSigners {
    /// Parse the file (OpenSSH's allowed_signers format: `principals [options] keytype key
    /// [comment]`). Only `ssh-ed25519` keys and the `namespaces` option are accepted: an option
    /// envlock would ignore (`valid-before`, `cert-authority`) is an error, not a silent gap.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut signers = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let trimmed = raw.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            signers.push(parse_line(raw, i + 1)?);
        }
        Ok(AllowedSigners { signers })
    }

    /// Whether `key` may sign records of `environment`.
    pub fn verdict(&self, key: &PublicKey, environment: &str) -> Verdict {
        let ns = namespace(environment);
        let mut listed = None;
        for s in self
            .signers
            .iter()
            .filter(|s| s.key.key_data() == key.key_data())
        {
            if s.namespaces
                .as_deref()
                .is_some_and(|p| pattern_list_matches(p, &ns))
            {
                return Verdict::Allowed(s.principals.clone());
            }
            listed.get_or_insert_with(|| s.principals.clone());
        }
        listed.map_or(Verdict::Unknown, Verdict::NotForEnvironment)
    }
}

fn error(line: usize, col: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        col,
        message: message.into(),
    }
}

/// The next whitespace-delimited token of `raw` from byte `at` (double quotes keep spaces),
/// and where it starts.
fn token(raw: &str, at: usize) -> Option<(usize, &str)> {
    let rest = &raw[at..];
    let start = at + (rest.len() - rest.trim_start().len());
    let bytes = raw.as_bytes();
    let mut end = start;
    let mut quoted = false;
    while end < bytes.len() {
        match bytes[end] {
            b'"' => quoted = !quoted,
            b' ' | b'\t' if !quoted => break,
            _ => {}
        }
        end += 1;
    }
    (end > start).then(|| (start, &raw[start..end]))
}

fn col(raw: &str, byte: usize) -> usize {
    raw[..byte].chars().count() + 1
}

fn parse_line(raw: &str, line: usize) -> Result<Signer, ParseError> {
    let (p_at, principals) = token(raw, 0).ok_or_else(|| error(line, 1, "empty line"))?;
    let mut at = p_at + principals.len();
    let (o_at, next) = token(raw, at)
        .ok_or_else(|| error(line, col(raw, at), "a key must follow the principals"))?;
    let mut namespaces = None;
    let (k_at, keytype) = if is_key_type(next) {
        (o_at, next)
    } else {
        namespaces = parse_options(next, line, col(raw, o_at))?;
        at = o_at + next.len();
        token(raw, at).ok_or_else(|| error(line, col(raw, at), "a key must follow the options"))?
    };
    if keytype != "ssh-ed25519" {
        return Err(error(
            line,
            col(raw, k_at),
            format!("`{keytype}`: only ssh-ed25519 keys can sign envlock's log"),
        ));
    }
    at = k_at + keytype.len();
    let (b_at, blob) =
        token(raw, at).ok_or_else(|| error(line, col(raw, at), "the key's base64 is missing"))?;
    let key = PublicKey::from_openssh(&format!("{keytype} {blob}")).map_err(|e| {
        error(
            line,
            col(raw, b_at),
            format!("not an ssh-ed25519 public key: {e}"),
        )
    })?;
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    Ok(Signer {
        line,
        principals: principals.to_owned(),
        namespaces,
        key,
        fingerprint,
    })
}

fn is_key_type(t: &str) -> bool {
    t.starts_with("ssh-") || t.starts_with("ecdsa-") || t.starts_with("sk-")
}

/// The options field (`namespaces="a,b"`, comma-separated): the `namespaces` patterns.
fn parse_options(opts: &str, line: usize, col: usize) -> Result<Option<String>, ParseError> {
    let mut namespaces = None;
    let mut rest = opts;
    while !rest.is_empty() {
        let name_end = rest.find(['=', ',']).unwrap_or(rest.len());
        let name = &rest[..name_end];
        rest = &rest[name_end..];
        let value = if let Some(v) = rest.strip_prefix("=\"") {
            let close = v.find('"').ok_or_else(|| {
                error(line, col, format!("option `{name}`: missing closing quote"))
            })?;
            rest = &v[close + 1..];
            Some(&v[..close])
        } else {
            None
        };
        match (name.to_ascii_lowercase().as_str(), value) {
            ("namespaces", Some(v)) => namespaces = Some(v.to_owned()),
            ("namespaces", None) => {
                return Err(error(line, col, "`namespaces` needs a quoted value"));
            }
            (other, _) => {
                return Err(error(
                    line,
                    col,
                    format!(
                        "option `{other}` is not supported by envlock (only `namespaces=\"envlock-log@<environment>,…\"`)"
                    ),
                ));
            }
        }
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None if rest.is_empty() => {}
            None => return Err(error(line, col, "options are separated by commas")),
        }
    }
    Ok(namespaces)
}

/// OpenSSH's pattern lists: comma-separated `*`/`?` patterns, `!` negates; a negated match
/// wins.
fn pattern_list_matches(list: &str, s: &str) -> bool {
    let mut any = false;
    for p in list.split(',').map(str::trim) {
        match p.strip_prefix('!') {
            Some(neg) if glob(neg.as_bytes(), s.as_bytes()) => return false,
            Some(_) => {}
            None => any |= glob(p.as_bytes(), s.as_bytes()),
        }
    }
    any
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    // Iterative wildcard match with one backtrack point: linear enough for short patterns.
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Why a record's signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unverified {
    /// The `signature` member is not an SSHSIG signature.
    Unreadable(String),
    /// `signer` does not name the key in the signature.
    SignerMismatch { signer: String, key: String },
    /// The key is not in `allowed_signers`.
    UnknownKey(String),
    /// The key is listed, but not for this environment.
    NotAllowed { key: String, principals: String },
    /// The signature does not match the record (or was made for another environment).
    BadSignature { key: String, why: String },
}

impl std::fmt::Display for Unverified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unverified::Unreadable(e) => write!(f, "its signature cannot be read: {e}"),
            Unverified::SignerMismatch { signer, key } => write!(
                f,
                "its `signer` {signer} is not the key that made its signature ({key})"
            ),
            Unverified::UnknownKey(key) => {
                write!(
                    f,
                    "it is signed by key {key}, which {ALLOWED_SIGNERS} does not list"
                )
            }
            Unverified::NotAllowed { key, principals } => write!(
                f,
                "it is signed by key {key} ({principals}), which {ALLOWED_SIGNERS} does not allow for this environment"
            ),
            Unverified::BadSignature { key, why } => write!(
                f,
                "its signature by key {key} does not match the record ({why})"
            ),
        }
    }
}

/// Check a record's signature: made by the key `signer` names, allowed for `environment` by
/// `allowed`, over `hash`, in the environment's namespace.
pub fn verify(
    allowed: &AllowedSigners,
    environment: &str,
    hash: &[u8],
    signer: &str,
    armored: &str,
) -> Result<String, Unverified> {
    let sig = SshSig::from_pem(armored).map_err(|e| Unverified::Unreadable(e.to_string()))?;
    let key = PublicKey::new(sig.public_key().clone(), "");
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    if fingerprint != signer {
        return Err(Unverified::SignerMismatch {
            signer: signer.to_owned(),
            key: fingerprint,
        });
    }
    let principals = match allowed.verdict(&key, environment) {
        Verdict::Allowed(p) => p,
        Verdict::NotForEnvironment(principals) => {
            return Err(Unverified::NotAllowed {
                key: fingerprint,
                principals,
            });
        }
        Verdict::Unknown => return Err(Unverified::UnknownKey(fingerprint)),
    };
    check_signature(&key, environment, hash, &sig).map_err(|why| Unverified::BadSignature {
        key: fingerprint,
        why,
    })?;
    Ok(principals)
}

/// A signature made while no `allowed_signers` was in force: it must still be a valid
/// signature of the record, by the key `signer` names.
pub fn verify_unlisted(
    environment: &str,
    hash: &[u8],
    signer: &str,
    armored: &str,
) -> Result<(), String> {
    let sig =
        SshSig::from_pem(armored).map_err(|e| format!("its signature cannot be read: {e}"))?;
    let key = PublicKey::new(sig.public_key().clone(), "");
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    if fingerprint != signer {
        return Err(Unverified::SignerMismatch {
            signer: signer.to_owned(),
            key: fingerprint,
        }
        .to_string());
    }
    check_signature(&key, environment, hash, &sig).map_err(|why| {
        format!("its signature by key {fingerprint} does not match the record ({why})")
    })
}

/// The signature itself, whoever made it: namespace and message.
pub fn check_signature(
    key: &PublicKey,
    environment: &str,
    hash: &[u8],
    sig: &SshSig,
) -> Result<(), String> {
    let ns = namespace(environment);
    if sig.namespace() != ns {
        return Err(format!(
            "it was made for namespace `{}`, not `{ns}`",
            sig.namespace()
        ));
    }
    key.verify(&ns, hash, sig).map_err(|e| e.to_string())
}

/// A key that can sign records: a private key file or one of the ssh-agent's keys.
#[derive(Debug)]
pub struct Key {
    public: PublicKey,
    fingerprint: String,
    source: Source,
    /// The commit whose `allowed_signers` allowed this key (empty: not checked).
    allowed_at: String,
}

#[derive(Debug)]
enum Source {
    File(Box<PrivateKey>, PathBuf),
    Agent(PathBuf),
}

/// Why no key could sign.
#[derive(thiserror::Error, Debug)]
pub enum KeyError {
    #[error("the signing key {path} ({KEY_VARIABLE}) cannot be used: {why}")]
    File { path: String, why: String },
    #[error("the ssh-agent ({socket}) cannot be used: {why}")]
    Agent { socket: String, why: String },
    #[error(
        "no signing key: {KEY_VARIABLE} is not set and no ssh-agent is running (SSH_AUTH_SOCK)"
    )]
    None,
}

impl Key {
    /// The key, as allowed by `allowed_signers` at `commit` (which records name when they
    /// name another commit: `signers_commit`).
    pub fn allowed_at(mut self, commit: &str) -> Self {
        self.allowed_at = commit.to_owned();
        self
    }

    /// The commit whose `allowed_signers` allowed the key (empty when not checked).
    pub fn commit(&self) -> &str {
        &self.allowed_at
    }

    /// The key's `SHA256:…` fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// Where the key is, for messages.
    pub fn source(&self) -> String {
        match &self.source {
            Source::File(_, path) => format!("{} ({KEY_VARIABLE})", path.display()),
            Source::Agent(_) => "the ssh-agent".to_owned(),
        }
    }

    /// Sign a record's hash for `environment`: the armored SSHSIG (`-----BEGIN SSH
    /// SIGNATURE-----`, lines ending in `\n`), as `ssh-keygen -Y sign` writes it.
    pub fn sign(&self, environment: &str, hash: &str) -> Result<String, String> {
        let ns = namespace(environment);
        let sig = match &self.source {
            Source::File(key, _) => key
                .sign(&ns, HashAlg::Sha512, hash.as_bytes())
                .map_err(|e| e.to_string())?,
            Source::Agent(socket) => {
                let data = SshSig::signed_data(&ns, HashAlg::Sha512, hash.as_bytes())
                    .map_err(|e| e.to_string())?;
                let blob = self.public.to_bytes().map_err(|e| e.to_string())?;
                let raw = agent::sign(socket, &blob, &data)?;
                let signature =
                    ssh_key::Signature::try_from(raw.as_slice()).map_err(|e| e.to_string())?;
                SshSig::new(
                    self.public.key_data().clone(),
                    ns,
                    HashAlg::Sha512,
                    signature,
                )
                .map_err(|e| e.to_string())?
            }
        };
        sig.to_pem(LineEnding::LF).map_err(|e| e.to_string())
    }
}

/// The key to sign with: `ENVLOCK_SIGNING_KEY`'s file when set, else the ssh-agent's first
/// ssh-ed25519 key that `allowed` lets sign for `environment` (its first ssh-ed25519 key when
/// none is, so the refusal can name it).
pub fn find_key(allowed: &AllowedSigners, environment: &str) -> Result<Key, KeyError> {
    if let Some(path) = crate::sysenv::var_os(KEY_VARIABLE).filter(|p| !p.is_empty()) {
        return from_file(Path::new(&path));
    }
    let Some(socket) = crate::sysenv::var_os("SSH_AUTH_SOCK").filter(|p| !p.is_empty()) else {
        return Err(KeyError::None);
    };
    let socket = PathBuf::from(socket);
    let agent_err = |why: String| KeyError::Agent {
        socket: socket.display().to_string(),
        why,
    };
    let keys: Vec<PublicKey> = agent::identities(&socket)
        .map_err(agent_err)?
        .iter()
        .filter_map(|blob| PublicKey::from_bytes(blob).ok())
        .filter(|k| k.algorithm() == ssh_key::Algorithm::Ed25519)
        .collect();
    let chosen = keys
        .iter()
        .find(|k| matches!(allowed.verdict(k, environment), Verdict::Allowed(_)))
        .or(keys.first())
        .ok_or_else(|| agent_err("it holds no ssh-ed25519 key".to_owned()))?;
    Ok(Key {
        fingerprint: chosen.fingerprint(HashAlg::Sha256).to_string(),
        public: chosen.clone(),
        source: Source::Agent(socket),
        allowed_at: String::new(),
    })
}

/// The key in an unencrypted OpenSSH private key file (what `ENVLOCK_SIGNING_KEY` names).
pub fn from_file(path: &Path) -> Result<Key, KeyError> {
    let fail = |why: String| KeyError::File {
        path: path.display().to_string(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() > 64 * 1024 {
        return Err(fail("it is larger than any private key".to_owned()));
    }
    let text = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let key = PrivateKey::from_openssh(&text)
        .map_err(|e| fail(format!("not an OpenSSH private key: {e}")))?;
    if key.is_encrypted() {
        return Err(fail(
            "it is encrypted with a passphrase: load it into the ssh-agent instead (`ssh-add`), or give CI an unencrypted key from its secret store".to_owned(),
        ));
    }
    if key.algorithm() != ssh_key::Algorithm::Ed25519 {
        return Err(fail(format!(
            "it is a {} key; only ssh-ed25519 keys can sign envlock's log",
            key.algorithm()
        )));
    }
    let public = key.public_key().clone();
    Ok(Key {
        fingerprint: public.fingerprint(HashAlg::Sha256).to_string(),
        public,
        source: Source::File(Box::new(key), path.to_owned()),
        allowed_at: String::new(),
    })
}

/// The two requests of the ssh-agent protocol envlock needs (draft-miller-ssh-agent):
/// list the identities (11 -> 12) and sign (13 -> 14).
mod agent {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    /// No answer of the agent envlock asks for is larger.
    const MAX_MESSAGE: usize = 256 * 1024;

    fn put_string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s);
    }

    fn request(socket: &Path, body: &[u8]) -> Result<Vec<u8>, String> {
        let mut s = UnixStream::connect(socket).map_err(|e| e.to_string())?;
        let timeout = Some(Duration::from_secs(30));
        s.set_read_timeout(timeout).map_err(|e| e.to_string())?;
        s.set_write_timeout(timeout).map_err(|e| e.to_string())?;
        let mut msg = (body.len() as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(body);
        s.write_all(&msg).map_err(|e| e.to_string())?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len).map_err(|e| e.to_string())?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_MESSAGE {
            return Err(format!("it answered a message of {len} bytes"));
        }
        let mut answer = vec![0u8; len];
        s.read_exact(&mut answer).map_err(|e| e.to_string())?;
        Ok(answer)
    }

    /// Reads the wire format's `uint32` and `string`.
    struct Cursor<'a>(&'a [u8]);

    impl<'a> Cursor<'a> {
        fn u32(&mut self) -> Result<u32, String> {
            let (head, rest) = self
                .0
                .split_first_chunk::<4>()
                .ok_or("its answer is cut short")?;
            self.0 = rest;
            Ok(u32::from_be_bytes(*head))
        }

        fn string(&mut self) -> Result<&'a [u8], String> {
            let n = self.u32()? as usize;
            if n > self.0.len() {
                return Err("its answer is cut short".to_owned());
            }
            let (s, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(s)
        }
    }

    /// The public key blobs the agent holds.
    pub fn identities(socket: &Path) -> Result<Vec<Vec<u8>>, String> {
        let answer = request(socket, &[11])?;
        if answer[0] != 12 {
            return Err(format!(
                "it refused to list its keys (answer {})",
                answer[0]
            ));
        }
        let mut c = Cursor(&answer[1..]);
        let n = c.u32()?;
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(c.string()?.to_vec());
            c.string()?; // the comment
        }
        Ok(out)
    }

    /// The agent's signature blob (`string algorithm, string signature`) over `data`.
    pub fn sign(socket: &Path, key: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
        let mut body = vec![13];
        put_string(&mut body, key);
        put_string(&mut body, data);
        body.extend_from_slice(&0u32.to_be_bytes());
        let answer = request(socket, &body)?;
        if answer[0] != 14 {
            return Err(format!(
                "it refused to sign with the key (answer {}; is it still loaded? does it need confirmation?)",
                answer[0]
            ));
        }
        Cursor(&answer[1..]).string().map(<[u8]>::to_vec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIK2v6jMoXDWG0lc6R5iNEbfotD787oEbgGERsRuyI39J";

    #[test]
    fn namespaces_scope_a_key_to_environments() {
        let text = format!(
            "# deployers\nana@example.com namespaces=\"envlock-log@prod,envlock-log@valid*\" ssh-ed25519 {KEY} ana\nci ssh-ed25519 {KEY}\n"
        );
        let a = AllowedSigners::parse(&text).unwrap();
        let key = a.signers[0].key.clone();
        assert!(matches!(a.verdict(&key, "prod"), Verdict::Allowed(p) if p == "ana@example.com"));
        assert!(matches!(a.verdict(&key, "validation"), Verdict::Allowed(_)));
        assert!(matches!(
            a.verdict(&key, "staging"),
            Verdict::NotForEnvironment(_)
        ));
        assert!(pattern_list_matches(
            "envlock-log@*,!envlock-log@prod",
            "envlock-log@dev"
        ));
        assert!(!pattern_list_matches(
            "envlock-log@*,!envlock-log@prod",
            "envlock-log@prod"
        ));
    }

    #[test]
    fn a_bad_line_is_pointed_at() {
        for (text, line, col) in [
            (format!("a ssh-rsa {KEY}"), 1, 3),
            (format!("\na valid-before=\"2020\" ssh-ed25519 {KEY}"), 2, 3),
            ("a ssh-ed25519 AAAAnotakey".to_owned(), 1, 15),
            ("a".to_owned(), 1, 2),
            (format!("a namespaces=\"x ssh-ed25519 {KEY}"), 1, 3),
        ] {
            let e = AllowedSigners::parse(&text).unwrap_err();
            assert_eq!((e.line, e.col), (line, col), "{text}: {e}");
        }
    }
}

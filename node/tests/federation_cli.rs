//! `fulcrumctl federation ...` as authorities and members run it: the real
//! binary, offline (no daemon anywhere), on files in a temporary directory.
//! A 2-of-3 charter admits a member and revokes it; what the CLI writes is
//! checked with the loaders the daemon uses and the protocol's own verify.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use fulcrum_node::charter::{load_certificate, load_charter, load_revocation};
use fulcrum_node::cli::time::now_ms;
use fulcrum_protocol::membership::{Membership, MembershipError};

const BIN: &str = env!("CARGO_BIN_EXE_fulcrumctl");
const DAY_MS: u64 = 86_400_000;

/// A scratch directory where every command runs, as an operator's working dir.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        std::process::Command::new(BIN)
            .args(args)
            .current_dir(self.0.path())
            .env_remove("FULCRUM_DATA_DIR")
            // A daemon must never be needed: point the socket nowhere.
            .env("FULCRUM_SOCKET", "/nonexistent/admin.sock")
            .output()
            .expect("run fulcrumctl")
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "fulcrumctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail with `code` and one `error:` line; returns it.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "fulcrumctl {args:?}: stderr {err:?}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "want exactly one stderr line, got: {err:?}");
        assert!(lines[0].starts_with("error: "), "{err:?}");
        assert!(out.stdout.is_empty(), "nothing on stdout on failure");
        lines[0].to_owned()
    }

    /// A new key file (the authority-key command); returns its public key.
    fn key(&self, name: &str) -> String {
        let json: serde_json::Value =
            serde_json::from_str(&self.ok(&["--json", "federation", "authority-key", "--out", name])).unwrap();
        assert_eq!(json["file"]["kind"], "key-file");
        json["file"]["public_key"].as_str().unwrap().to_owned()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).unwrap();
    }
}

/// Three authorities a1..a3 with a 2-of-3 charter `federation.toml`, and a
/// member key `node.key` (same format as `fulcrumd init`'s).
struct Federation {
    dir: Dir,
    authorities: Vec<String>,
    member: String,
}

impl Federation {
    fn new() -> Federation {
        let dir = Dir::new();
        let authorities: Vec<String> = ["a1.key", "a2.key", "a3.key"].iter().map(|k| dir.key(k)).collect();
        let member = dir.key("node.key");
        // Authorities by public key, as they would hand them over, and one by key file.
        let out = dir.ok(&[
            "federation",
            "init",
            "--name",
            "eu-sovereign",
            "--authority",
            &authorities[0],
            "--authority",
            &authorities[1],
            "--authority",
            "a3.key",
            "--threshold",
            "2",
            "--out",
            "federation.toml",
        ]);
        assert!(out.contains("2 of 3 authorities"), "{out}");
        Federation { dir, authorities, member }
    }

    /// `member request` for node.key, valid for a year.
    fn request(&self, out: &str) {
        self.dir.ok(&[
            "federation",
            "member",
            "request",
            "--key",
            "node.key",
            "--organisation",
            "Example Cloud GmbH",
            "--country",
            "de",
            "--label",
            "gaia-x:level-2",
            "--label",
            "iso:27001",
            "--valid-for",
            "365d",
            "--charter",
            "federation.toml",
            "--out",
            out,
        ]);
    }

    fn sign(&self, what: &str, authority_key: &str, request: &str, out: &str) -> String {
        self.dir.ok(&[
            "federation",
            what,
            "sign",
            "--charter",
            "federation.toml",
            "--authority-key",
            authority_key,
            request,
            "--out",
            out,
        ])
    }

    fn assemble_args<'a>(what: &'a str, request: &'a str, sigs: &[&'a str], out: &'a str) -> Vec<&'a str> {
        let mut args = vec!["federation", what, "assemble", "--charter", "federation.toml", request];
        args.extend_from_slice(sigs);
        args.extend(["--out", out]);
        args
    }

    fn assemble(&self, what: &str, request: &str, sigs: &[&str], out: &str) -> String {
        self.dir.ok(&Self::assemble_args(what, request, sigs, out))
    }

    fn assemble_fails(&self, what: &str, request: &str, sigs: &[&str]) -> String {
        self.dir.fails(&Self::assemble_args(what, request, sigs, "never.cert"), 2)
    }

    /// A year-long certificate signed by a1 and a3: `member.cert`.
    fn certified(self) -> Federation {
        self.request("request.toml");
        self.sign("member", "a1.key", "request.toml", "sig-a1.toml");
        self.sign("member", "a3.key", "request.toml", "sig-a3.toml");
        self.assemble("member", "request.toml", &["sig-a1.toml", "sig-a3.toml"], "member.cert");
        self
    }
}

// ---- the whole flow -------------------------------------------------------

#[test]
fn two_of_three_authorities_admit_a_member() {
    let f = Federation::new();
    let d = &f.dir;
    for key in ["a1.key", "a2.key", "a3.key", "node.key"] {
        let mode = std::fs::metadata(d.path(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let charter_text = d.read("federation.toml");
    assert!(charter_text.contains("threshold = 2"), "{charter_text}");
    assert!(charter_text.contains("# a3.key"), "the key file an authority came from is noted: {charter_text}");
    let charter = load_charter(&d.path("federation.toml")).unwrap();
    assert_eq!(charter.name, "eu-sovereign");
    assert_eq!(charter.threshold, 2);
    let listed: Vec<String> = charter.authorities.iter().map(ToString::to_string).collect();
    assert_eq!(listed, f.authorities);

    f.request("request.toml");
    let request = d.read("request.toml");
    assert!(request.contains("kind = \"member-certificate-request\""), "{request}");
    assert!(request.contains(&format!("member = \"{}\"", f.member)), "{request}");
    assert!(request.contains("country = \"DE\""), "{request}");

    // The authority sees what it signs.
    let shown = f.sign("member", "a1.key", "request.toml", "sig-a1.toml");
    for needle in ["Example Cloud GmbH", "gaia-x:level-2, iso:27001", &f.member, "as authority 1 of 3", "sig-a1.toml"] {
        assert!(shown.contains(needle), "{needle:?} in {shown}");
    }
    f.sign("member", "a3.key", "request.toml", "sig-a3.toml");
    let out = f.assemble("member", "request.toml", &["sig-a3.toml", "sig-a1.toml"], "member.cert");
    assert!(out.contains("signed by 2 of the 3 authorities"), "{out}");

    // What the daemon will do: load the file and verify it against the charter.
    let cert = load_certificate(&d.path("member.cert")).unwrap();
    let now = now_ms();
    assert_eq!(cert.verify(&charter, now), Ok(()));
    let body = cert.body();
    assert_eq!(body.member.to_string(), f.member);
    assert_eq!(body.organisation, "Example Cloud GmbH");
    assert_eq!(body.country.as_str(), "DE");
    assert_eq!(body.labels.iter().map(String::as_str).collect::<Vec<_>>(), ["gaia-x:level-2", "iso:27001"]);
    assert!(body.not_before_ms <= now && body.not_before_ms + DAY_MS > now);
    assert_eq!(body.not_after_ms - body.not_before_ms, 365 * DAY_MS);
    let signers: Vec<String> = cert.signatures().iter().map(|(k, _)| k.to_string()).collect();
    assert_eq!(signers, [f.authorities[0].clone(), f.authorities[2].clone()], "in charter order");
    let mut membership = Membership::new(charter.clone()).unwrap();
    membership.add_certificate(cert.clone(), now).unwrap();
    assert_eq!(membership.check(&body.member, now), Ok(()));
    assert_eq!(membership.attested_labels(&body.member, now), body.labels);

    // And the CLI agrees.
    let verified = d.ok(&["federation", "verify", "--charter", "federation.toml", "member.cert"]);
    assert!(verified.starts_with("member.cert: valid member certificate for"), "{verified}");
    let next_year = chrono_free_rfc3339(now + 400 * DAY_MS);
    let line = d.fails(&["federation", "verify", "--charter", "federation.toml", "member.cert", "--at", &next_year], 1);
    assert!(line.contains("expired at"), "{line}");

    let json: serde_json::Value =
        serde_json::from_str(&d.ok(&["--json", "federation", "show", "member.cert"])).unwrap();
    assert_eq!(json["kind"], "member-certificate");
    assert_eq!(json["member"], f.member.as_str());
    assert_eq!(json["signed_by"].as_array().unwrap().len(), 2);
    let human = d.ok(&["federation", "show", "federation.toml"]);
    assert!(human.contains("2 of 3 authorities"), "{human}");
    let human = d.ok(&["federation", "show", "a2.key"]);
    assert!(human.contains(&f.authorities[1]), "{human}");
}

/// RFC 3339 UTC for `ms`, via the CLI's own formatter.
fn chrono_free_rfc3339(ms: u64) -> String {
    fulcrum_node::cli::time::format_rfc3339(ms)
}

#[test]
fn a_duplicate_signature_counts_once() {
    let f = Federation::new();
    f.request("request.toml");
    f.sign("member", "a2.key", "request.toml", "sig-a2.toml");
    std::fs::copy(f.dir.path("sig-a2.toml"), f.dir.path("sig-a2-again.toml")).unwrap();
    let line = f.assemble_fails("member", "request.toml", &["sig-a2.toml", "sig-a2-again.toml"]);
    assert!(line.contains("only 1 valid authority signature"), "{line}");

    f.sign("member", "a1.key", "request.toml", "sig-a1.toml");
    let out = f.assemble("member", "request.toml", &["sig-a2.toml", "sig-a2-again.toml", "sig-a1.toml"], "m.cert");
    assert!(out.contains("note: sig-a2-again.toml is a second signature by authority"), "{out}");
    assert_eq!(load_certificate(&f.dir.path("m.cert")).unwrap().signatures().len(), 2);
}

// ---- refusals --------------------------------------------------------------

#[test]
fn one_signature_is_not_enough() {
    let f = Federation::new();
    f.request("request.toml");
    f.sign("member", "a2.key", "request.toml", "sig-a2.toml");
    let line = f.assemble_fails("member", "request.toml", &["sig-a2.toml"]);
    assert!(line.contains("only 1 valid authority signature"), "{line}");
    assert!(line.contains("threshold 2 (of 3 authorities)"), "{line}");
    assert!(!f.dir.path("never.cert").exists());
}

#[test]
fn a_key_outside_the_charter_cannot_sign() {
    let f = Federation::new();
    let d = &f.dir;
    let outsider = d.key("outsider.key");
    f.request("request.toml");
    let line = d.fails(
        &[
            "federation",
            "member",
            "sign",
            "--charter",
            "federation.toml",
            "--authority-key",
            "outsider.key",
            "request.toml",
            "--out",
            "sig-x.toml",
        ],
        2,
    );
    assert!(line.contains("outsider.key is not an authority key of federation \"eu-sovereign\""), "{line}");
    assert!(line.contains(&outsider), "{line}");
    assert!(!d.path("sig-x.toml").exists());

    // A signature the outsider made under a charter of its own is refused at assembly.
    d.ok(&[
        "federation",
        "init",
        "--name",
        "eu-sovereign",
        "--authority",
        &outsider,
        "--authority",
        &f.authorities[0],
        "--threshold",
        "1",
        "--out",
        "rogue.toml",
    ]);
    d.ok(&[
        "federation",
        "member",
        "sign",
        "--charter",
        "rogue.toml",
        "--authority-key",
        "outsider.key",
        "request.toml",
        "--out",
        "sig-x.toml",
    ]);
    f.sign("member", "a1.key", "request.toml", "sig-a1.toml");
    let line = f.assemble_fails("member", "request.toml", &["sig-a1.toml", "sig-x.toml"]);
    assert!(line.contains(&format!("sig-x.toml is signed by {outsider}, which is not an authority")), "{line}");
}

#[test]
fn tampered_requests_and_signatures_are_refused() {
    let f = Federation::new();
    let d = &f.dir;
    f.request("request.toml");
    f.sign("member", "a1.key", "request.toml", "sig-a1.toml");
    f.sign("member", "a2.key", "request.toml", "sig-a2.toml");
    let request = d.read("request.toml");

    // A readable field changed after the request was made: nobody signs or assembles it.
    d.write("edited.toml", &request.replace("\"iso:27001\"", "\"iso:27001\", \"bsi:c5\""));
    let sign_args = [
        "federation",
        "member",
        "sign",
        "--charter",
        "federation.toml",
        "--authority-key",
        "a3.key",
        "edited.toml",
        "--out",
        "sig-a3.toml",
    ];
    let line = d.fails(&sign_args, 2);
    assert!(line.contains("edited.toml: labels: the file says"), "{line}");
    assert!(line.contains("edited after it was made"), "{line}");
    let line = f.assemble_fails("member", "edited.toml", &["sig-a1.toml", "sig-a2.toml"]);
    assert!(line.contains("edited.toml: labels"), "{line}");

    // The signed bytes changed (fields and body alike): the signatures are over another request.
    d.write("other.toml", &request.replace("Example Cloud GmbH", "Example Cloud GmbX"));
    let line = d.fails(&sign_args.map(|a| if a == "edited.toml" { "other.toml" } else { a }), 2);
    assert!(line.contains("organisation: the file says"), "{line}");
    f.dir.ok(&[
        "federation",
        "member",
        "request",
        "--key",
        &f.member,
        "--organisation",
        "Example Cloud GmbX",
        "--country",
        "DE",
        "--valid-for",
        "30d",
        "--federation",
        "eu-sovereign",
        "--out",
        "another.toml",
    ]);
    let line = f.assemble_fails("member", "another.toml", &["sig-a1.toml", "sig-a2.toml"]);
    assert!(line.contains("sig-a1.toml signs another request"), "{line}");

    // One signature digit flipped.
    let sig = d.read("sig-a2.toml");
    let line_start = sig.find("signature = \"").unwrap() + "signature = \"".len();
    let mut bytes = sig.into_bytes();
    bytes[line_start + 10] = if bytes[line_start + 10] == b'0' { b'1' } else { b'0' };
    d.write("sig-a2-bad.toml", std::str::from_utf8(&bytes).unwrap());
    let line = f.assemble_fails("member", "request.toml", &["sig-a1.toml", "sig-a2-bad.toml"]);
    assert!(line.contains("sig-a2-bad.toml: the signature of authority"), "{line}");
    assert!(line.contains("does not verify"), "{line}");

    // A signature file handed in as the request.
    let line = f.assemble_fails("member", "sig-a1.toml", &["sig-a2.toml"]);
    assert!(
        line.contains(
            "sig-a1.toml is an authority's signature on a member certificate request, not a member certificate request"
        ),
        "{line}"
    );

    // An edited certificate does not load.
    f.assemble("member", "request.toml", &["sig-a1.toml", "sig-a2.toml"], "member.cert");
    let cert = d.read("member.cert");
    d.write("edited.cert", &cert.replace("country = \"DE\"", "country = \"FR\""));
    let e = load_certificate(&d.path("edited.cert")).unwrap_err().to_string();
    assert!(e.contains("edited.cert: country: the file says \"FR\" but its signed bytes say \"DE\""), "{e}");
    let line = d.fails(&["federation", "verify", "--charter", "federation.toml", "edited.cert"], 2);
    assert!(line.contains("country"), "{line}");
}

#[test]
fn an_exposed_authority_key_is_refused() {
    let f = Federation::new();
    f.request("request.toml");
    std::fs::set_permissions(f.dir.path("a1.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let line = f.dir.fails(
        &[
            "federation",
            "member",
            "sign",
            "--charter",
            "federation.toml",
            "--authority-key",
            "a1.key",
            "request.toml",
            "--out",
            "sig.toml",
        ],
        2,
    );
    assert!(line.contains("readable by others"), "{line}");
}

#[test]
fn outputs_are_not_overwritten_without_force() {
    let f = Federation::new();
    let line = f.dir.fails(&["federation", "authority-key", "--out", "a1.key"], 2);
    assert!(line.contains("a1.key already exists; refusing to overwrite a key"), "{line}");
    let args = ["federation", "init", "--name", "dev", "--threshold", "0", "--out", "federation.toml"];
    let line = f.dir.fails(&args, 2);
    assert!(line.contains("federation.toml already exists; choose another --out, or add --force"), "{line}");
    let mut forced = args.to_vec();
    forced.push("--force");
    f.dir.ok(&forced);
    let charter = load_charter(&f.dir.path("federation.toml")).unwrap();
    assert!(charter.is_open() && charter.authorities.is_empty());
}

// ---- revocation ------------------------------------------------------------

#[test]
fn two_authorities_revoke_a_member() {
    let f = Federation::new().certified();
    let d = &f.dir;
    let out = d.ok(&[
        "federation",
        "revoke",
        "request",
        "--member",
        "member.cert",
        "--reason",
        "left the federation",
        "--charter",
        "federation.toml",
        "--out",
        "revoke.toml",
    ]);
    assert!(out.contains(&f.member), "{out}");
    let shown = f.sign("revoke", "a2.key", "revoke.toml", "rsig-a2.toml");
    assert!(shown.contains("left the federation"), "{shown}");

    // A certificate signature is no revocation signature, and one is not enough.
    f.sign("member", "a2.key", "request.toml", "sig-a2.toml");
    let line = f.assemble_fails("revoke", "revoke.toml", &["rsig-a2.toml", "sig-a2.toml"]);
    assert!(line.contains("sig-a2.toml is an authority's signature on a member certificate request"), "{line}");
    let line = f.assemble_fails("revoke", "revoke.toml", &["rsig-a2.toml"]);
    assert!(line.contains("only 1 valid authority signature") && line.contains("threshold 2"), "{line}");

    f.sign("revoke", "a3.key", "revoke.toml", "rsig-a3.toml");
    let out = f.assemble("revoke", "revoke.toml", &["rsig-a2.toml", "rsig-a3.toml"], "revocation.toml");
    assert!(out.contains("revocation signed by 2 of the 3 authorities"), "{out}");

    let charter = load_charter(&d.path("federation.toml")).unwrap();
    let revocation = load_revocation(&d.path("revocation.toml")).unwrap();
    assert_eq!(revocation.verify(&charter), Ok(()));
    assert_eq!(revocation.body().member.to_string(), f.member);
    assert_eq!(revocation.body().reason, "left the federation");

    let cert = load_certificate(&d.path("member.cert")).unwrap();
    let member = cert.body().member;
    let now = now_ms();
    let mut membership = Membership::new(charter).unwrap();
    membership.add_certificate(cert, now).unwrap();
    assert_eq!(membership.revoke(revocation), Ok(true));
    assert_eq!(membership.check(&member, now), Err(MembershipError::Revoked(member)));

    let verified = d.ok(&["federation", "verify", "--charter", "federation.toml", "revocation.toml"]);
    assert!(verified.contains("valid revocation of"), "{verified}");
    let line = d.fails(&["federation", "verify", "--charter", "federation.toml", "member.cert", "revocation.toml"], 1);
    assert!(line.contains("member.cert: member") && line.contains("is revoked by revocation.toml"), "{line}");
    let json: serde_json::Value =
        serde_json::from_str(&d.ok(&["--json", "federation", "show", "revocation.toml"])).unwrap();
    assert_eq!(json["kind"], "revocation");
    assert_eq!(json["reason"], "left the federation");
}

// ---- charters --------------------------------------------------------------

#[test]
fn malformed_charters_are_refused_with_the_field_named() {
    let d = Dir::new();
    let a = d.key("a.key");
    let b = d.key("b.key");
    let cases: Vec<(&str, String, Vec<String>)> = vec![
        (
            "unknown-field.toml",
            format!("name = \"x\"\nthreshold = 1\nauthorities = [\"{a}\"]\nquorum = 2\n"),
            vec!["unknown-field.toml: line 4".into(), "unknown field `quorum`".into()],
        ),
        (
            "too-high.toml",
            format!("name = \"x\"\nthreshold = 3\nauthorities = [\"{a}\", \"{b}\"]\n"),
            vec!["too-high.toml: line 2, column 13: threshold: 3 is more than the 2 authorities listed".into()],
        ),
        (
            "duplicate.toml",
            format!("name = \"x\"\nthreshold = 1\nauthorities = [\n  \"{a}\",\n  \"{b}\",\n  \"{a}\",\n]\n"),
            vec!["duplicate.toml: line 6, column 3: authorities: entry 3 repeats entry 1".into()],
        ),
        (
            "bad-hex.toml",
            format!("name = \"x\"\nthreshold = 1\nauthorities = [\"{}zz\"]\n", &a[..62]),
            vec!["bad-hex.toml: line 3".into(), "authorities: entry 1".into(), "not an Ed25519 public key".into()],
        ),
        (
            "short-key.toml",
            format!("name = \"x\"\nthreshold = 1\nauthorities = [\"{}\"]\n", &a[..60]),
            vec!["authorities: entry 1".into(), "30 bytes".into()],
        ),
        (
            "bad-name.toml",
            "name = \"eu sovereign\"\nthreshold = 0\n".into(),
            vec!["bad-name.toml: line 1, column 8: name: \"eu sovereign\"".into(), "without spaces".into()],
        ),
        (
            "no-threshold.toml",
            format!("name = \"x\"\nauthorities = [\"{a}\"]\n"),
            vec!["no-threshold.toml".into(), "missing field `threshold`".into()],
        ),
        (
            "negative.toml",
            "name = \"x\"\nthreshold = -1\n".into(),
            vec!["negative.toml: line 2".into(), "threshold:".into()],
        ),
        ("not-toml.toml", "name = \n".into(), vec!["not-toml.toml: line 1".into()]),
    ];
    for (file, text, needles) in cases {
        d.write(file, &text);
        let e = load_charter(&d.path(file)).unwrap_err().to_string();
        let line = d.fails(&["federation", "show", file], 2);
        assert_eq!(line, format!("error: {e}").replace(&d.path(file).display().to_string(), file));
        for needle in needles {
            assert!(line.contains(&needle), "{file}: want {needle:?} in {line}");
        }
        // Every command that reads a charter refuses it the same way.
        let line = d.fails(&["federation", "verify", "--charter", file, "x.cert"], 2);
        assert!(line.starts_with(&format!("error: {file}")), "{line}");
    }
    let line = d.fails(&["federation", "show", "missing.toml"], 2);
    assert!(line.contains("cannot read missing.toml"), "{line}");
}

#[test]
fn init_checks_what_it_writes() {
    let d = Dir::new();
    let a = d.key("a.key");
    let line =
        d.fails(&["federation", "init", "--name", "x", "--authority", &a, "--threshold", "2", "--out", "f.toml"], 2);
    assert!(line.contains("--threshold 2 is more than the 1 authorities given"), "{line}");
    let line = d.fails(
        &[
            "federation",
            "init",
            "--name",
            "x",
            "--authority",
            &a,
            "--authority",
            "a.key",
            "--threshold",
            "1",
            "--out",
            "f.toml",
        ],
        2,
    );
    assert!(line.contains("--authority number 2 is the same key as number 1"), "{line}");
    let line = d.fails(&["federation", "init", "--name", "a b", "--threshold", "0", "--out", "f.toml"], 2);
    assert!(line.contains("--name") && line.contains("without spaces"), "{line}");
    let line = d.fails(
        &["federation", "init", "--name", "x", "--authority", &a[..63], "--threshold", "0", "--out", "f.toml"],
        2,
    );
    assert!(line.contains("has 63 hex digits; a public key has 64"), "{line}");
    let line = d.fails(&["federation", "init", "--name", "x", "--authority", &"0".repeat(64), "--threshold", "0"], 2);
    assert!(line.contains("not a usable Ed25519 public key"), "{line}");
    assert!(!d.path("f.toml").exists());
}

#[test]
fn requests_check_their_arguments() {
    let d = Dir::new();
    let member = d.key("node.key");
    let base = ["federation", "member", "request", "--key", &member, "--organisation", "O", "--country", "DE"];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        args.extend(["--out", "r.toml"]);
        args.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>()
    };
    let fails = |extra: &[&str]| {
        let args = with(extra);
        d.fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), 2)
    };
    let line = fails(&["--federation", "x"]);
    assert!(line.contains("--valid-for") && line.contains("--not-after"), "{line}");
    let line = fails(&["--valid-for", "1d"]);
    assert!(line.contains("--federation") && line.contains("--charter"), "{line}");
    let line =
        fails(&["--federation", "x", "--not-before", "2000-01-01T00:00:00Z", "--not-after", "2001-01-01T00:00:00Z"]);
    assert!(line.contains("would have expired already"), "{line}");
    let line = fails(&["--federation", "x", "--not-after", "2001-01-01T00:00:00Z"]);
    assert!(line.contains("is not after the start of validity"), "{line}");
    let line = fails(&["--federation", "x", "--valid-for", "1d", "--label", "has space"]);
    assert!(line.contains("--label"), "{line}");
    let line = fails(&["--federation", "x", "--valid-for", "1d", "--charter", "f.toml"]);
    assert!(line.contains("cannot be used with"), "{line}");
    let line = fails(&["--charter", "missing.toml", "--valid-for", "1d"]);
    assert!(line.contains("cannot read missing.toml"), "{line}");
}

#[test]
fn the_example_charter_is_an_open_development_federation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let charter = load_charter(&root.join("configs/federation.toml")).unwrap();
    assert!(charter.is_open());
    assert!(charter.authorities.is_empty());
    let node_toml = std::fs::read_to_string(root.join("configs/node.toml")).unwrap();
    assert!(node_toml.contains(&format!("federation = \"{}\"", charter.name)), "same name as configs/node.toml");
    // An open federation with no authorities has nothing to assemble.
    let d = Dir::new();
    d.key("node.key");
    std::fs::copy(root.join("configs/federation.toml"), d.path("federation.toml")).unwrap();
    let f = Federation { dir: d, authorities: Vec::new(), member: String::new() };
    f.request("request.toml");
    let line = f.dir.fails(
        &[
            "federation",
            "member",
            "assemble",
            "--charter",
            "federation.toml",
            "request.toml",
            "request.toml",
            "--out",
            "m",
        ],
        2,
    );
    assert!(line.contains("has no authorities: it is open (threshold 0)"), "{line}");
}

//! Properties of the pre-upgrade decision (§2.2, §2.3, §2.10), through the public API only.
//!
//! 1. No request is `Accepted` unless the key hook approved exactly the request's key (and,
//!    for a campaign, the ownership hook said yes); ambiguous requests never reach the hook.
//!    Checked against an independent model of §2.2 over a few candidate keys whose validity is
//!    written down by hand.
//! 2. Extraction and the whole decision never panic on arbitrary header values, URIs and
//!    methods.
//! 3. No response (body or header) and no error text ever contains the key.

use bytes::Bytes;
use http::request::Parts;
use misar_proto::auth::{AccountId, extract_credentials};
use misar_proto::handshake::{self, HandshakeConfig, RejectAction, RejectionStyle, Step};
use misar_proto::route::{CampaignId, Channel};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

fn pick<T: Copy>(g: &mut Gen, items: &[T]) -> T {
    *g.choose(items).expect("non-empty")
}

fn small(g: &mut Gen, max: usize) -> usize {
    usize::arbitrary(g) % (max + 1)
}

/// Percent-encodes every byte (`%XX`), the most an honest client could encode.
fn encode_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn build(method: &str, uri: &str, headers: &[(&str, Vec<u8>)]) -> Option<Parts> {
    let mut request = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, http::HeaderValue::from_bytes(value).ok()?);
    }
    Some(request.body(()).ok()?.into_parts().0)
}

const STYLES: [RejectionStyle; 3] = [
    RejectionStyle::Http,
    RejectionStyle::CloseAfterUpgrade,
    RejectionStyle::Auto,
];

// ---------------------------------------------------------------------------------------------
// Property 1: the model.

/// Candidate keys and whether §2.2 calls them syntactically valid (written by hand, not
/// computed by the crate).
const CANDIDATES: [(&str, bool); 8] = [
    ("msk_alice", true),
    ("msk_bob", true),
    ("msk_carol-2_X", true),
    ("msk_", false),
    ("sk_alice", false),
    ("msk_al.ice", false),
    ("MSK_alice", false),
    ("", false),
];
const CAMPAIGNS: [&str; 2] = ["c1", "c2"];

/// A candidate index, valid keys (and the first one above all, so both places often agree)
/// more likely than the invalid ones.
fn candidate(g: &mut Gen) -> usize {
    pick(g, &[0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7])
}

#[derive(Clone, Debug)]
struct HeaderSpec {
    scheme: &'static str,
    separator: &'static str,
    padding: &'static str,
    key: usize,
}

#[derive(Clone, Debug)]
struct TokenSpec {
    key: usize,
    encoded: bool,
}

#[derive(Clone, Debug)]
enum Path {
    Inbox,
    Campaign(usize),
    Elsewhere,
}

#[derive(Clone, Debug)]
struct Case {
    path: Path,
    headers: Vec<HeaderSpec>,
    tokens: Vec<TokenSpec>,
    noise_before: bool,
    style: RejectionStyle,
    /// `known[k]`: the key table maps candidate `k` to account `acct-k`.
    known: Vec<bool>,
    /// `owns[k][c]`: account `acct-k` owns campaign `c`.
    owns: Vec<Vec<bool>>,
    key_hook_fails: bool,
    ownership_hook_fails: bool,
}

impl Arbitrary for Case {
    fn arbitrary(g: &mut Gen) -> Self {
        let path = match small(g, 4) {
            0 => Path::Elsewhere,
            1 | 2 => Path::Inbox,
            _ => Path::Campaign(small(g, CAMPAIGNS.len() - 1)),
        };
        // Mostly zero or one of each place, sometimes two.
        let count = |g: &mut Gen| pick(g, &[0, 0, 0, 1, 1, 1, 1, 2]);
        let headers = (0..count(g))
            .map(|_| HeaderSpec {
                scheme: pick(
                    g,
                    &["Bearer", "bearer", "BEARER", "bEaReR", "Basic", "Token", ""],
                ),
                separator: pick(g, &[" ", "  ", "\t", " \t"]),
                padding: pick(g, &["", " ", "\t"]),
                key: candidate(g),
            })
            .collect();
        let tokens = (0..count(g))
            .map(|_| TokenSpec {
                key: candidate(g),
                encoded: bool::arbitrary(g),
            })
            .collect();
        Case {
            path,
            headers,
            tokens,
            noise_before: bool::arbitrary(g),
            style: pick(g, &STYLES),
            known: (0..CANDIDATES.len()).map(|_| bool::arbitrary(g)).collect(),
            owns: (0..CANDIDATES.len())
                .map(|_| CAMPAIGNS.iter().map(|_| bool::arbitrary(g)).collect())
                .collect(),
            key_hook_fails: small(g, 9) == 0,
            ownership_hook_fails: small(g, 9) == 0,
        }
    }
}

impl Case {
    fn request(&self) -> Parts {
        let path = match self.path {
            Path::Inbox => "/mail/ws/inbox".to_owned(),
            Path::Campaign(c) => format!("/mail/ws/campaigns/{}", CAMPAIGNS[c]),
            Path::Elsewhere => "/mail/ws/outbox".to_owned(),
        };
        let mut params = Vec::new();
        if self.noise_before {
            params.push("a=1&tokens=msk_alice&Token=msk_bob".to_owned());
        }
        for token in &self.tokens {
            let key = CANDIDATES[token.key].0;
            let key = if token.encoded {
                encode_all(key)
            } else {
                key.to_owned()
            };
            params.push(format!("token={key}"));
        }
        let uri = if params.is_empty() {
            path
        } else {
            format!("{path}?{}", params.join("&"))
        };
        let headers: Vec<(&str, Vec<u8>)> = self
            .headers
            .iter()
            .map(|h| {
                let value = format!(
                    "{pad}{}{}{}{pad}",
                    h.scheme,
                    h.separator,
                    CANDIDATES[h.key].0,
                    pad = h.padding
                );
                ("authorization", value.into_bytes())
            })
            .collect();
        build("GET", &uri, &headers).expect("the model only builds valid requests")
    }

    /// The single key §2.2 extracts, or `None` when the request must be refused before any
    /// hook is asked.
    fn model_key(&self) -> Option<usize> {
        let header = match self.headers.as_slice() {
            [] => None,
            [h] if h.scheme.eq_ignore_ascii_case("bearer") && CANDIDATES[h.key].1 => Some(h.key),
            _ => return None,
        };
        let query = match self.tokens.as_slice() {
            [] => None,
            [t] if CANDIDATES[t.key].1 => Some(t.key),
            _ => return None,
        };
        match (header, query) {
            (Some(h), Some(q)) if h == q => Some(h),
            (Some(_), Some(_)) => None,
            (one, other) => one.or(other),
        }
    }

    /// `Some((account, channel))` when the model accepts.
    fn model_outcome(&self) -> Option<(String, Channel)> {
        if matches!(self.path, Path::Elsewhere) {
            return None;
        }
        let key = self.model_key()?;
        if self.key_hook_fails || !self.known[key] {
            return None;
        }
        let account = format!("acct-{key}");
        match self.path {
            Path::Inbox => Some((account, Channel::Inbox)),
            Path::Campaign(c) if !self.ownership_hook_fails && self.owns[key][c] => Some((
                account,
                Channel::Campaign(CampaignId::new(CAMPAIGNS[c]).expect("valid id")),
            )),
            _ => None,
        }
    }
}

/// What the driver saw.
#[derive(Debug, Default)]
struct Trace {
    /// Keys the key-check hook was asked about.
    keys_asked: Vec<String>,
    /// (account, campaign) pairs the ownership hook was asked about.
    ownership_asked: Vec<(String, String)>,
    accepted: Option<(String, Channel)>,
}

/// Drives the decision with hooks answering from the case's tables.
fn drive(case: &Case) -> Trace {
    let config = HandshakeConfig::new().with_rejection_style(case.style);
    let mut trace = Trace::default();
    let mut step = handshake::start(&config, &case.request());
    loop {
        step = match step {
            Step::NeedsAuthentication(q) => {
                trace.keys_asked.push(q.key().expose().to_owned());
                if case.key_hook_fails {
                    Step::Rejected(q.hook_failed())
                } else {
                    let found = CANDIDATES
                        .iter()
                        .position(|(candidate, _)| q.key().ct_eq_str(candidate));
                    match found {
                        Some(k) if case.known[k] => {
                            q.authenticated(AccountId::new(format!("acct-{k}")))
                        }
                        _ => Step::Rejected(q.unknown_key()),
                    }
                }
            }
            Step::NeedsOwnership(q) => {
                let account = q.account().as_str().to_owned();
                let campaign = q.campaign().as_str().to_owned();
                trace
                    .ownership_asked
                    .push((account.clone(), campaign.clone()));
                if case.ownership_hook_fails {
                    Step::Rejected(q.hook_failed())
                } else {
                    let k = account
                        .strip_prefix("acct-")
                        .and_then(|k| k.parse::<usize>().ok());
                    let c = CAMPAIGNS.iter().position(|c| *c == campaign);
                    match (k, c) {
                        (Some(k), Some(c)) if case.owns[k][c] => Step::Accepted(q.grant()),
                        _ => Step::Rejected(q.deny()),
                    }
                }
            }
            Step::Accepted(a) => {
                trace.accepted = Some((a.account().as_str().to_owned(), a.channel().clone()));
                return trace;
            }
            Step::Rejected(r) => {
                let _ = r.action();
                return trace;
            }
        }
    }
}

fn prop_accepted_only_with_the_hooks_approval(case: Case) -> TestResult {
    let trace = drive(&case);
    let expected_key = if matches!(case.path, Path::Elsewhere) {
        None
    } else {
        case.model_key()
    };
    // The key hook is asked once, about exactly the request's key, or never.
    let expected_asked: Vec<String> = expected_key
        .map(|k| CANDIDATES[k].0.to_owned())
        .into_iter()
        .collect();
    if trace.keys_asked != expected_asked {
        return TestResult::error(format!(
            "key hook asked {:?}, expected {expected_asked:?}",
            trace.keys_asked
        ));
    }
    // The ownership hook is asked only for a campaign, after the key hook said yes.
    let expected_ownership: Vec<(String, String)> = match (expected_key, &case.path) {
        (Some(k), Path::Campaign(c)) if !case.key_hook_fails && case.known[k] => {
            vec![(format!("acct-{k}"), CAMPAIGNS[*c].to_owned())]
        }
        _ => vec![],
    };
    if trace.ownership_asked != expected_ownership {
        return TestResult::error(format!(
            "ownership hook asked {:?}, expected {expected_ownership:?}",
            trace.ownership_asked
        ));
    }
    let expected = case.model_outcome();
    if trace.accepted != expected {
        return TestResult::error(format!(
            "accepted {:?}, the model says {expected:?}",
            trace.accepted
        ));
    }
    TestResult::passed()
}

#[test]
fn no_request_is_accepted_without_the_hooks_approval() {
    QuickCheck::new()
        .tests(3000)
        .quickcheck(prop_accepted_only_with_the_hooks_approval as fn(Case) -> TestResult);
}

/// The model itself must reach every outcome, or the property above proves little.
#[test]
fn the_model_covers_every_outcome() {
    let mut g = Gen::new(20);
    let (mut accepted_inbox, mut accepted_campaign, mut refused_ambiguous, mut asked) =
        (0, 0, 0, 0);
    for _ in 0..4000 {
        let case = Case::arbitrary(&mut g);
        match case.model_outcome() {
            Some((_, Channel::Inbox)) => accepted_inbox += 1,
            Some(_) => accepted_campaign += 1,
            None => {}
        }
        if case.model_key().is_none() && !(case.headers.is_empty() && case.tokens.is_empty()) {
            refused_ambiguous += 1;
        }
        if !drive(&case).keys_asked.is_empty() {
            asked += 1;
        }
    }
    // Expected about 160, 50, 2500 and 650 (measured); the bounds leave a wide margin.
    assert!(accepted_inbox > 60, "{accepted_inbox}");
    assert!(accepted_campaign > 15, "{accepted_campaign}");
    assert!(refused_ambiguous > 1000, "{refused_ambiguous}");
    assert!(asked > 250, "{asked}");
}

// ---------------------------------------------------------------------------------------------
// Property 2: never panic.

/// Arbitrary request material: most of it will not even be a valid `http` request, which is
/// skipped; the rest goes through extraction and the whole decision.
#[derive(Clone, Debug)]
struct Chaos {
    method: Vec<u8>,
    uri: String,
    authorization: Vec<Vec<u8>>,
    origin: Vec<Vec<u8>>,
    style: RejectionStyle,
    allowlist: bool,
    answers: Vec<u8>,
    http2: bool,
}

/// Characters that matter to URIs and query decoding, to reach deep into the parsers.
const URI_ALPHABET: &[char] = &[
    '/', '?', '&', '=', '%', '+', '#', 't', 'o', 'k', 'e', 'n', 'm', 's', '_', '-', '.', 'A', 'F',
    '0', '2', '9', 'é', ' ', '\t',
];

impl Arbitrary for Chaos {
    fn arbitrary(g: &mut Gen) -> Self {
        let uri = match small(g, 3) {
            0 => String::arbitrary(g),
            1 => {
                let tail: String = (0..small(g, 40)).map(|_| pick(g, URI_ALPHABET)).collect();
                format!("/mail/ws/inbox?{tail}")
            }
            2 => {
                let tail: String = (0..small(g, 40)).map(|_| pick(g, URI_ALPHABET)).collect();
                format!("/mail/ws/campaigns/{tail}")
            }
            _ => format!("/mail/ws/inbox?token={}", String::arbitrary(g)),
        };
        let header_value = |g: &mut Gen| -> Vec<u8> {
            match small(g, 2) {
                0 => Vec::<u8>::arbitrary(g),
                1 => {
                    let mut v = b"Bearer ".to_vec();
                    v.extend(Vec::<u8>::arbitrary(g));
                    v
                }
                _ => format!("bearer msk_{}", String::arbitrary(g)).into_bytes(),
            }
        };
        Chaos {
            method: pick(g, &[&b"GET"[..], b"GET", b"POST", b"CONNECT", b"get"]).to_vec(),
            uri,
            authorization: (0..pick(g, &[0, 1, 1, 2]))
                .map(|_| header_value(g))
                .collect(),
            origin: (0..pick(g, &[0, 1, 2]))
                .map(|_| Vec::<u8>::arbitrary(g))
                .collect(),
            style: pick(g, &STYLES),
            allowlist: bool::arbitrary(g),
            answers: Vec::arbitrary(g),
            http2: bool::arbitrary(g),
        }
    }
}

/// Consumes every output of a rejection: status, reason, texts, response.
fn exhaust(rejected: handshake::Rejected) -> Vec<String> {
    let mut texts = vec![
        rejected.reason().to_string(),
        format!("{:?}", rejected.reason()),
        format!("{rejected:?}"),
    ];
    let _ = rejected.status();
    match rejected.action() {
        RejectAction::Respond(response) => texts.extend(response_texts(&response)),
        RejectAction::UpgradeThenClose(close) => texts.push(close.code().to_string()),
        other => texts.push(format!("{other:?}")),
    }
    texts
}

fn response_texts(response: &http::Response<Bytes>) -> Vec<String> {
    let mut texts = vec![String::from_utf8_lossy(response.body()).into_owned()];
    for (name, value) in response.headers() {
        texts.push(format!(
            "{name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    texts
}

/// Drives a request to its end with arbitrary hook answers; returns every text produced.
fn drive_all(config: &HandshakeConfig, request: &Parts, answers: &[u8]) -> Vec<String> {
    let mut texts = Vec::new();
    if let Err(e) = extract_credentials(request) {
        texts.push(e.to_string());
        texts.push(format!("{e:?}"));
        let _ = e.place();
    }
    let mut answers = answers.iter().copied().chain(std::iter::repeat(0));
    let mut step = handshake::start(config, request);
    loop {
        texts.push(format!("{step:?}"));
        step = match step {
            Step::NeedsAuthentication(q) => {
                let _ = (
                    q.key().redacted().to_string(),
                    q.channel(),
                    q.credential_source(),
                );
                match answers.next().unwrap_or(0) % 3 {
                    0 => q.authenticated(AccountId::from("acct")),
                    1 => Step::Rejected(q.unknown_key()),
                    _ => Step::Rejected(q.hook_failed()),
                }
            }
            Step::NeedsOwnership(q) => {
                let _ = (q.account(), q.campaign(), q.credential_source());
                match answers.next().unwrap_or(0) % 3 {
                    0 => Step::Accepted(q.grant()),
                    1 => Step::Rejected(q.deny()),
                    _ => Step::Rejected(q.hook_failed()),
                }
            }
            Step::Accepted(a) => {
                let _ = (
                    a.account(),
                    a.channel(),
                    a.campaign(),
                    a.credential_source(),
                );
                return texts;
            }
            Step::Rejected(r) => {
                texts.extend(exhaust(r));
                return texts;
            }
        }
    }
}

fn prop_never_panics(chaos: Chaos) -> TestResult {
    let Ok(method) = std::str::from_utf8(&chaos.method) else {
        return TestResult::discard();
    };
    let mut headers: Vec<(&str, Vec<u8>)> = Vec::new();
    for value in &chaos.authorization {
        headers.push(("authorization", value.clone()));
    }
    for value in &chaos.origin {
        headers.push(("origin", value.clone()));
    }
    // Invalid header bytes or URIs cannot be represented by `http` at all: skip those parts
    // rather than the whole case.
    headers.retain(|(_, v)| http::HeaderValue::from_bytes(v).is_ok());
    let Some(mut request) = build(method, &chaos.uri, &headers) else {
        return TestResult::discard();
    };
    if chaos.http2 {
        request.version = http::Version::HTTP_2;
    }
    let mut config = HandshakeConfig::new().with_rejection_style(chaos.style);
    if chaos.allowlist {
        config = config.with_allowed_origins(["https://app.example.com"]);
    }
    let _ = drive_all(&config, &request, &chaos.answers);
    TestResult::passed()
}

#[test]
fn extraction_and_decision_never_panic() {
    QuickCheck::new()
        .tests(5000)
        .max_tests(50_000)
        .quickcheck(prop_never_panics as fn(Chaos) -> TestResult);
}

/// `http` refuses most arbitrary strings as URIs; check enough survive to mean something.
#[test]
fn chaos_reaches_the_decision() {
    let mut g = Gen::new(30);
    let mut built = 0;
    for _ in 0..1000 {
        let chaos = Chaos::arbitrary(&mut g);
        if http::Uri::try_from(chaos.uri.as_str()).is_ok() {
            built += 1;
        }
    }
    // About a third survive; the generator is unseeded, so leave room (286 was seen).
    assert!(built > 200, "{built}");
}

// ---------------------------------------------------------------------------------------------
// Property 3: the key never leaks.

#[derive(Clone, Debug)]
struct SecretCase {
    /// The key body after `msk_`: 16–40 characters of `[A-Za-z0-9_-]`.
    body: String,
    /// How the key (or a broken variant of it) is sent.
    shape: usize,
    path: usize,
    style: RejectionStyle,
    answers: Vec<u8>,
}

const KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
const SHAPES: usize = 9;

impl Arbitrary for SecretCase {
    fn arbitrary(g: &mut Gen) -> Self {
        let len = 16 + small(g, 24);
        let body = (0..len)
            .map(|_| char::from(pick(g, KEY_ALPHABET)))
            .collect();
        SecretCase {
            body,
            shape: small(g, SHAPES - 1),
            path: small(g, 2),
            style: pick(g, &STYLES),
            answers: Vec::arbitrary(g),
        }
    }
}

impl SecretCase {
    fn request(&self) -> Parts {
        let key = format!("msk_{}", self.body);
        let path = [
            "/mail/ws/inbox",
            "/mail/ws/campaigns/c1",
            "/mail/ws/nowhere",
        ][self.path];
        let (query, auth): (String, Option<String>) = match self.shape {
            0 => (String::new(), Some(format!("Bearer {key}"))),
            1 => (format!("?token={key}"), None),
            2 => (format!("?token={key}."), None),
            3 => (String::new(), Some(format!("Bearer {key}."))),
            4 => (String::new(), Some(format!("Basic {key}"))),
            5 => (format!("?token={key}"), Some("Bearer msk_other".to_owned())),
            6 => (format!("?token={key}&token={key}"), None),
            7 => (format!("?token={}", encode_all(&key)), None),
            _ => (format!("?token={key}{}", "x".repeat(300)), None),
        };
        let headers: Vec<(&str, Vec<u8>)> = auth
            .map(|a| ("authorization", a.into_bytes()))
            .into_iter()
            .collect();
        build("GET", &format!("{path}{query}"), &headers).expect("valid request")
    }
}

/// The first text holding 8 consecutive characters of the key body, if any.
fn leak<'a>(body: &str, texts: &'a [String]) -> Option<(&'a str, String)> {
    let windows: Vec<&str> = body
        .as_bytes()
        .windows(8)
        .filter_map(|w| std::str::from_utf8(w).ok())
        .collect();
    texts.iter().find_map(|text| {
        windows
            .iter()
            .find(|w| text.contains(**w))
            .map(|w| (text.as_str(), (*w).to_owned()))
    })
}

fn prop_key_never_leaks(case: SecretCase) -> TestResult {
    let config = HandshakeConfig::new().with_rejection_style(case.style);
    let texts = drive_all(&config, &case.request(), &case.answers);
    match leak(&case.body, &texts) {
        Some((text, window)) => {
            TestResult::error(format!("{text:?} contains {window:?} of the key"))
        }
        None => TestResult::passed(),
    }
}

#[test]
fn no_response_or_error_text_contains_the_key() {
    QuickCheck::new()
        .tests(2000)
        .quickcheck(prop_key_never_leaks as fn(SecretCase) -> TestResult);
}

/// The leak check must be able to fail: a text holding part of the key is caught, and the
/// texts collected do include the response bodies the check is about.
#[test]
fn the_leak_check_can_fail() {
    let body = "ABCDEFGHijklmnop1234";
    assert!(leak(body, &["fine".to_owned(), "msk_…1234".to_owned()]).is_none());
    assert!(leak(body, &["oops: HijklmnoP".to_owned()]).is_some());
    let case = SecretCase {
        body: body.to_owned(),
        shape: 2,
        path: 0,
        style: RejectionStyle::Http,
        answers: vec![],
    };
    let texts = drive_all(&HandshakeConfig::new(), &case.request(), &case.answers);
    assert!(
        texts
            .iter()
            .any(|t| t.contains(r#""error":"unauthorized""#)),
        "{texts:?}"
    );
}

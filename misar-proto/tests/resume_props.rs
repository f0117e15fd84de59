//! Resume values (§2.11) under arbitrary input (quickcheck): parsing never panics, what parses
//! prints back to the same text, and every valid position round-trips.

use misar_proto::resume::{Epoch, Position, ResumeRequest, extract_resume};
use quickcheck::{QuickCheck, TestResult};

fn parse_is_total_and_canonical(value: String) -> TestResult {
    match ResumeRequest::parse(&value) {
        Ok(request) => TestResult::from_bool(request.to_string() == value),
        Err(_) => TestResult::passed(),
    }
}

fn positions_round_trip(epoch: String, offset: u64) -> TestResult {
    let epoch: String = epoch
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(32)
        .collect();
    let Ok(epoch) = Epoch::new(&epoch) else {
        return TestResult::discard();
    };
    let position = Position { epoch, offset };
    let text = position.to_string();
    TestResult::from_bool(Position::parse(&text) == Ok(position))
}

fn extraction_never_panics(query: String, header: Option<String>) -> bool {
    let uri = format!("/x?{}", query.replace(['#', ' '], "%20"));
    let Ok(request) = http::Request::get(uri.as_str()).body(()) else {
        return true;
    };
    let mut parts = request.into_parts().0;
    if let Some(value) = header.and_then(|h| http::HeaderValue::from_str(&h).ok()) {
        parts.headers.insert("misar-resume", value);
    }
    let _ = extract_resume(&parts);
    true
}

#[test]
fn resume_values() {
    QuickCheck::new()
        .tests(5000)
        .quickcheck(parse_is_total_and_canonical as fn(String) -> TestResult);
    QuickCheck::new()
        .tests(2000)
        .quickcheck(positions_round_trip as fn(String, u64) -> TestResult);
    QuickCheck::new()
        .tests(2000)
        .quickcheck(extraction_never_panics as fn(String, Option<String>) -> bool);
}

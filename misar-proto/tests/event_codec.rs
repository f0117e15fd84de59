//! The event codec against every row of §2.4: each type, each field, each way to get it wrong.

use misar_proto::close::ChannelKind;
use misar_proto::event::{
    Bounce, BounceType, CampaignCompleted, CampaignEvent, CampaignStarted, Cancelled, Complaint,
    Completed, DEFAULT_MAX_LEN, DecodeError, Decoder, EmailReceived, Event, EventClass, Expected,
    Failed, FieldError, InboxEvent, JsonType, Progress, Timestamp, TimestampError, UnknownEvent,
    Unsubscribe, decode, decode_campaign, decode_inbox,
};
use misar_proto::route::CampaignIdError;

#[derive(Clone, Copy, Debug, PartialEq)]
enum K {
    Str,
    /// A campaign id.
    Id,
    Count,
    Time,
    Bounce,
}

struct Spec {
    ty: &'static str,
    channel: ChannelKind,
    /// In §2.4 order: (wire name, value kind, required).
    fields: &'static [(&'static str, K, bool)],
}

use ChannelKind::{Campaign, Inbox};
use K::*;

const SPECS: &[Spec] = &[
    Spec {
        ty: "email_received",
        channel: Inbox,
        fields: &[
            ("from", Str, true),
            ("subject", Str, true),
            ("receivedAt", Time, true),
            ("messageId", Str, false),
            ("to", Str, false),
        ],
    },
    Spec {
        ty: "bounce",
        channel: Inbox,
        fields: &[
            ("email", Str, true),
            ("bounceType", Bounce, false),
            ("reason", Str, false),
            ("campaignId", Id, false),
            ("bouncedAt", Time, true),
        ],
    },
    Spec {
        ty: "complaint",
        channel: Inbox,
        fields: &[
            ("email", Str, true),
            ("campaignId", Id, false),
            ("complainedAt", Time, true),
        ],
    },
    Spec {
        ty: "unsubscribe",
        channel: Inbox,
        fields: &[
            ("email", Str, true),
            ("campaignId", Id, false),
            ("unsubscribedAt", Time, true),
        ],
    },
    Spec {
        ty: "campaign_started",
        channel: Inbox,
        fields: &[
            ("campaignId", Id, true),
            ("campaignName", Str, true),
            ("total", Count, true),
            ("startedAt", Time, true),
        ],
    },
    Spec {
        ty: "campaign_completed",
        channel: Inbox,
        fields: &[
            ("campaignId", Id, true),
            ("campaignName", Str, true),
            ("sent", Count, true),
            ("delivered", Count, true),
            ("opened", Count, true),
            ("completedAt", Time, true),
        ],
    },
    Spec {
        ty: "progress",
        channel: Campaign,
        fields: &[
            ("campaignId", Id, true),
            ("sent", Count, true),
            ("total", Count, true),
            ("delivered", Count, true),
            ("bounced", Count, true),
            ("opened", Count, true),
        ],
    },
    Spec {
        ty: "completed",
        channel: Campaign,
        fields: &[
            ("campaignId", Id, true),
            ("sent", Count, true),
            ("delivered", Count, true),
            ("bounced", Count, true),
            ("opened", Count, true),
            ("completedAt", Time, false),
        ],
    },
    Spec {
        ty: "failed",
        channel: Campaign,
        fields: &[
            ("campaignId", Id, true),
            ("error", Str, true),
            ("sent", Count, false),
            ("failedAt", Time, false),
        ],
    },
    Spec {
        ty: "cancelled",
        channel: Campaign,
        fields: &[
            ("campaignId", Id, true),
            ("sent", Count, false),
            ("cancelledAt", Time, false),
        ],
    },
];

fn sample(k: K) -> &'static str {
    match k {
        Str => r#""x-1""#,
        Id => r#""c-1""#,
        Count => "7",
        Time => r#""2026-05-27T10:15:00Z""#,
        Bounce => r#""hard""#,
    }
}

fn expected(k: K) -> Expected {
    match k {
        Count => Expected::Count,
        Str | Id | Time | Bounce => Expected::String,
    }
}

/// `{"type":..., name: value, ...}` from entries in the given order.
fn object(entries: &[(String, String)]) -> String {
    let body: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect();
    format!("{{{}}}", body.join(","))
}

fn entries(spec: &Spec, value_of: impl Fn(&str, K) -> Option<String>) -> Vec<(String, String)> {
    let mut out = vec![("type".to_owned(), format!("\"{}\"", spec.ty))];
    for &(name, k, _) in spec.fields {
        if let Some(v) = value_of(name, k) {
            out.push((name.to_owned(), v));
        }
    }
    out
}

fn full(spec: &Spec) -> Vec<(String, String)> {
    entries(spec, |_, k| Some(sample(k).to_owned()))
}

fn dec(spec: &Spec, text: &str) -> Result<Event, DecodeError> {
    decode(spec.channel, text.as_bytes())
}

fn other(channel: ChannelKind) -> ChannelKind {
    match channel {
        Inbox => Campaign,
        Campaign => Inbox,
    }
}

#[test]
fn full_and_minimal_objects_decode_and_reencode_canonically() {
    for spec in SPECS {
        // The samples are written in §2.4 order, `type` first, compact: exactly our encoding.
        let text = object(&full(spec));
        let event = dec(spec, &text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(event.type_name(), spec.ty);
        assert_eq!(event.channel(), spec.channel);
        assert_eq!(
            event.encode().bytes().as_ref(),
            text.as_bytes(),
            "{}",
            spec.ty
        );

        // Only the required fields: optional ones are absent from the re-encoding too.
        let text = object(&entries(spec, |name, k| {
            let required = spec.fields.iter().any(|f| f.0 == name && f.2);
            required.then(|| sample(k).to_owned())
        }));
        let event = dec(spec, &text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            event.encode().bytes().as_ref(),
            text.as_bytes(),
            "{}",
            spec.ty
        );
    }
}

#[test]
fn each_required_field_missing_is_named() {
    for spec in SPECS {
        for &(field, _, required) in spec.fields {
            let text = object(&entries(spec, |name, k| {
                (name != field).then(|| sample(k).to_owned())
            }));
            let got = dec(spec, &text);
            if required {
                assert_eq!(got, Err(DecodeError::MissingField { field }), "{text}");
            } else {
                // An optional field left out decodes, and stays out when re-encoded.
                let event = got.unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(event.encode().bytes().as_ref(), text.as_bytes());
            }
        }
    }
}

#[test]
fn the_first_missing_field_in_wire_order_is_named() {
    assert_eq!(
        decode_inbox(br#"{"type":"email_received"}"#),
        Err(DecodeError::MissingField { field: "from" })
    );
    assert_eq!(
        decode_campaign(br#"{"type":"progress","campaignId":"c","sent":1}"#),
        Err(DecodeError::MissingField { field: "total" })
    );
}

#[test]
fn each_field_mistyped_is_named() {
    for spec in SPECS {
        for &(field, kind, _) in spec.fields {
            let wrong: &[(&str, JsonType)] = match kind {
                Count => &[
                    (r#""7""#, JsonType::String),
                    ("true", JsonType::Bool),
                    ("[]", JsonType::Array),
                    ("{}", JsonType::Object),
                ],
                Str | Id | Time | Bounce => &[
                    ("7", JsonType::Number),
                    ("-7", JsonType::Number),
                    ("7.5", JsonType::Number),
                    ("false", JsonType::Bool),
                    (r#"["x"]"#, JsonType::Array),
                    (r#"{"x":1}"#, JsonType::Object),
                ],
            };
            for &(value, found) in wrong {
                let text = object(&entries(spec, |name, k| {
                    Some(if name == field {
                        value.to_owned()
                    } else {
                        sample(k).to_owned()
                    })
                }));
                let reason = FieldError::WrongType {
                    expected: expected(kind),
                    found,
                };
                assert_eq!(
                    dec(spec, &text),
                    Err(DecodeError::InvalidField { field, reason }),
                    "{text}"
                );
            }
        }
    }
}

#[test]
fn null_is_absent_for_optional_fields_and_invalid_for_required_ones() {
    for spec in SPECS {
        for &(field, kind, required) in spec.fields {
            let with_null = object(&entries(spec, |name, k| {
                Some(if name == field {
                    "null".to_owned()
                } else {
                    sample(k).to_owned()
                })
            }));
            let without = object(&entries(spec, |name, k| {
                (name != field).then(|| sample(k).to_owned())
            }));
            let got = dec(spec, &with_null);
            if required {
                let reason = FieldError::WrongType {
                    expected: expected(kind),
                    found: JsonType::Null,
                };
                assert_eq!(got, Err(DecodeError::InvalidField { field, reason }));
            } else {
                assert_eq!(got, dec(spec, &without), "{with_null}");
                assert!(got.is_ok());
            }
        }
    }
}

#[test]
fn each_field_twice_is_a_duplicate() {
    for spec in SPECS {
        for &(field, k, required) in spec.fields {
            let mut e = full(spec);
            e.push((field.to_owned(), sample(k).to_owned()));
            assert_eq!(
                dec(spec, &object(&e)),
                Err(DecodeError::DuplicateField { field })
            );
            // An optional field given as `null`, then with a value, is still given twice.
            if required {
                continue;
            }
            let mut e = full(spec);
            e.retain(|(n, _)| n != field);
            e.push((field.to_owned(), "null".to_owned()));
            e.push((field.to_owned(), sample(k).to_owned()));
            assert_eq!(
                dec(spec, &object(&e)),
                Err(DecodeError::DuplicateField { field })
            );
        }
        let mut e = full(spec);
        e.push(("type".to_owned(), format!("\"{}\"", spec.ty)));
        assert_eq!(
            dec(spec, &object(&e)),
            Err(DecodeError::DuplicateField { field: "type" })
        );
    }
}

#[test]
fn counts_are_unsigned_64_bit_integers() {
    let cases: &[(&str, Result<u64, FieldError>)] = &[
        ("0", Ok(0)),
        ("18446744073709551615", Ok(u64::MAX)),
        ("18446744073709551616", Err(FieldError::TooLarge)),
        ("100000000000000000000000", Err(FieldError::TooLarge)),
        ("-1", Err(FieldError::Negative)),
        ("-9223372036854775809", Err(FieldError::Negative)),
        ("-1.5", Err(FieldError::Negative)),
        ("1.5", Err(FieldError::NotAnInteger)),
        ("1.0", Err(FieldError::NotAnInteger)),
        ("1e2", Err(FieldError::NotAnInteger)),
        ("-0", Err(FieldError::NotAnInteger)),
    ];
    for spec in SPECS {
        for &(field, kind, _) in spec.fields {
            if kind != Count {
                continue;
            }
            for (value, want) in cases {
                let text = object(&entries(spec, |name, k| {
                    Some(if name == field {
                        (*value).to_owned()
                    } else {
                        sample(k).to_owned()
                    })
                }));
                let got = dec(spec, &text);
                match want {
                    Ok(n) => {
                        let event = got.unwrap_or_else(|e| panic!("{text}: {e}"));
                        let encoded = event.encode();
                        let needle = format!("\"{field}\":{n}");
                        let s = std::str::from_utf8(encoded.bytes()).unwrap();
                        assert!(s.contains(&needle), "{s} lacks {needle}");
                    }
                    Err(reason) => assert_eq!(
                        got,
                        Err(DecodeError::InvalidField {
                            field,
                            reason: *reason
                        }),
                        "{text}"
                    ),
                }
            }
        }
    }
}

#[test]
fn each_campaign_id_field_is_validated() {
    let cases = [
        (String::new(), CampaignIdError::Empty),
        ("a".repeat(129), CampaignIdError::TooLong { len: 129 }),
        (
            "a b".to_owned(),
            CampaignIdError::InvalidCharacter { position: 1 },
        ),
        (
            "c/1".to_owned(),
            CampaignIdError::InvalidCharacter { position: 1 },
        ),
        (
            "é".to_owned(),
            CampaignIdError::InvalidCharacter { position: 0 },
        ),
        (
            "c.1".to_owned(),
            CampaignIdError::InvalidCharacter { position: 1 },
        ),
    ];
    let mut fields = 0;
    for spec in SPECS {
        for &(field, kind, _) in spec.fields {
            if kind != Id {
                continue;
            }
            fields += 1;
            for (value, err) in &cases {
                let text = object(&entries(spec, |name, k| {
                    Some(if name == field {
                        serde_json::to_string(value).unwrap()
                    } else {
                        sample(k).to_owned()
                    })
                }));
                assert_eq!(
                    dec(spec, &text),
                    Err(DecodeError::InvalidField {
                        field,
                        reason: FieldError::CampaignId(*err)
                    }),
                    "{text}"
                );
            }
            // The longest id, and one written with escapes (kept unescaped), are valid.
            for (value, id) in [
                (format!("\"{}\"", "Z".repeat(128)), "Z".repeat(128)),
                (r#""c\u002d1_X""#.to_owned(), "c-1_X".to_owned()),
            ] {
                let text = object(&entries(spec, |name, k| {
                    Some(if name == field {
                        value.clone()
                    } else {
                        sample(k).to_owned()
                    })
                }));
                let event = dec(spec, &text).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(event.campaign_id(), Some(&cid(&id)), "{text}");
                let encoded = event.encode();
                let wire = std::str::from_utf8(encoded.bytes()).unwrap();
                assert!(wire.contains(&format!("\"campaignId\":\"{id}\"")), "{wire}");
            }
        }
    }
    // Every §2.4 type but email_received names a campaign.
    assert_eq!(fields, 9);
}

#[test]
fn each_timestamp_field_is_validated() {
    let cases = [
        ("2026-13-01T00:00:00Z", TimestampError::MonthOutOfRange),
        ("2026-02-29T00:00:00Z", TimestampError::DayOutOfRange),
        ("2026-05-27 10:15:00Z", TimestampError::Malformed { at: 10 }),
        ("yesterday", TimestampError::Malformed { at: 0 }),
    ];
    for spec in SPECS {
        for &(field, kind, _) in spec.fields {
            if kind != Time {
                continue;
            }
            for (value, err) in cases {
                let text = object(&entries(spec, |name, k| {
                    Some(if name == field {
                        format!("\"{value}\"")
                    } else {
                        sample(k).to_owned()
                    })
                }));
                assert_eq!(
                    dec(spec, &text),
                    Err(DecodeError::InvalidField {
                        field,
                        reason: FieldError::Timestamp(err)
                    }),
                    "{text}"
                );
            }
            // Written with escapes, a valid timestamp is still valid (and kept unescaped).
            let text = object(&entries(spec, |name, k| {
                Some(if name == field {
                    r#""2026-05-27\u005410:15:00.25+02:00""#.to_owned()
                } else {
                    sample(k).to_owned()
                })
            }));
            let event = dec(spec, &text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let encoded = event.encode();
            let s = std::str::from_utf8(encoded.bytes()).unwrap();
            assert!(s.contains(&format!("\"{field}\":\"2026-05-27T10:15:00.25+02:00\"")));
        }
    }
}

#[test]
fn type_not_first_still_decodes() {
    for spec in SPECS {
        let canonical = dec(spec, &object(&full(spec))).unwrap();
        let mut e = full(spec);
        e.rotate_left(1); // `type` last
        assert_eq!(dec(spec, &object(&e)).as_ref(), Ok(&canonical));
        let half = e.len() / 2;
        e.rotate_left(half); // `type` in the middle
        assert_eq!(dec(spec, &object(&e)).as_ref(), Ok(&canonical));
        // The same errors are found on the slow path.
        let mut e = full(spec);
        let (field, _, _) = spec.fields[0];
        e.retain(|(n, _)| n != field);
        e.rotate_left(1);
        assert_eq!(
            dec(spec, &object(&e)),
            Err(DecodeError::MissingField { field })
        );
        let mut e = full(spec);
        e.push(("type".to_owned(), "null".to_owned()));
        e.remove(0);
        assert_eq!(
            dec(spec, &object(&e)),
            Err(DecodeError::InvalidField {
                field: "type",
                reason: FieldError::WrongType {
                    expected: Expected::String,
                    found: JsonType::Null
                }
            })
        );
    }
}

#[test]
fn unknown_fields_are_ignored() {
    for spec in SPECS {
        let canonical = dec(spec, &object(&full(spec))).unwrap();
        let mut e = full(spec);
        e.insert(
            1,
            (
                "futureField".to_owned(),
                r#"{"a":[1,2,{"b":null}],"c":"\"}"}"#.to_owned(),
            ),
        );
        e.push(("zz".to_owned(), "-1.5e300".to_owned()));
        e.push(("zz".to_owned(), "true".to_owned())); // unknown duplicates are not ours to judge
        // A known field of another type is unknown here.
        let stranger = if spec.fields.iter().any(|f| f.0 == "subject") {
            "total"
        } else {
            "subject"
        };
        e.push((stranger.to_owned(), "[]".to_owned()));
        assert_eq!(
            dec(spec, &object(&e)).as_ref(),
            Ok(&canonical),
            "{}",
            spec.ty
        );
        // Whitespace anywhere JSON allows it.
        let spaced = object(&e).replace(",\"", " ,\n \"").replace("\":", "\" : ");
        let spaced = format!(" \n{spaced}\t\r\n");
        assert_eq!(dec(spec, &spaced).as_ref(), Ok(&canonical));
    }
}

#[test]
fn wrong_channel_both_ways() {
    for spec in SPECS {
        let text = object(&full(spec));
        assert_eq!(
            decode(other(spec.channel), text.as_bytes()),
            Err(DecodeError::WrongChannel { kind: spec.ty })
        );
        // Also when the fields do not fit, and when `type` is not first.
        assert_eq!(
            decode(
                other(spec.channel),
                format!(r#"{{"type":"{}"}}"#, spec.ty).as_bytes()
            ),
            Err(DecodeError::WrongChannel { kind: spec.ty })
        );
        let mut e = full(spec);
        e.rotate_left(1);
        assert_eq!(
            decode(other(spec.channel), object(&e).as_bytes()),
            Err(DecodeError::WrongChannel { kind: spec.ty })
        );
    }
    assert_eq!(
        decode_inbox(br#"{"type":"progress","campaignId":"uuid","sent":1,"total":2,"delivered":1,"bounced":0,"opened":0}"#),
        Err(DecodeError::WrongChannel { kind: "progress" })
    );
    assert_eq!(
        decode_campaign(br#"{"type":"email_received","from":"a","subject":"b","receivedAt":"2026-05-27T10:15:00Z"}"#),
        Err(DecodeError::WrongChannel { kind: "email_received" })
    );
}

#[test]
fn unknown_types_are_kept_whole() {
    let raw = br#"{"type":"calendar_invite","when":"2026-06-01T09:00:00Z","who":["a","b"]}"#;
    let want = UnknownEvent::new("calendar_invite", bytes::Bytes::from_static(raw));
    assert_eq!(decode_inbox(raw), Ok(InboxEvent::Unknown(want.clone())));
    assert_eq!(
        decode_campaign(raw),
        Ok(CampaignEvent::Unknown(want.clone()))
    );
    let event = decode_inbox(raw).unwrap();
    assert_eq!(event.type_name(), "calendar_invite");
    assert_eq!(event.campaign_id(), None);
    let encoded = event.encode();
    assert_eq!(encoded.bytes().as_ref(), raw);
    assert_eq!(encoded.class(), EventClass::Ordinary);
    assert_eq!(
        CampaignEvent::Unknown(want).encode().class(),
        EventClass::Ordinary
    );

    // `type` not first, surrounding whitespace, escapes in the type: raw is still the input.
    let raw = b" {\"when\":1, \"type\":\"ping\\u0067\"} ";
    match decode_campaign(raw) {
        Ok(CampaignEvent::Unknown(u)) => {
            assert_eq!(u.kind, "pingg");
            assert_eq!(u.raw.as_ref(), raw);
        }
        other => panic!("{other:?}"),
    }
    // Its type must still be a string, given once, and the rest well-formed.
    assert_eq!(
        decode_inbox(br#"{"type":"new","x":1,"type":"new"}"#),
        Err(DecodeError::DuplicateField { field: "type" })
    );
    assert_eq!(
        decode_inbox(br#"{"x":1,"type":"new","type":"old"}"#),
        Err(DecodeError::DuplicateField { field: "type" })
    );
    assert!(matches!(
        decode_inbox(br#"{"type":"new","x":[1,}"#),
        Err(DecodeError::Syntax { .. })
    ));
    // The empty string is a type like any other.
    assert!(
        matches!(decode_inbox(br#"{"type":""}"#), Ok(InboxEvent::Unknown(u)) if u.kind.is_empty())
    );
}

#[test]
fn type_must_be_a_present_string() {
    assert_eq!(decode_inbox(b"{}"), Err(DecodeError::MissingType));
    assert_eq!(
        decode_campaign(br#"{"campaignId":"c","sent":1}"#),
        Err(DecodeError::MissingType)
    );
    assert_eq!(
        decode_inbox(br#"{"Type":"bounce"}"#),
        Err(DecodeError::MissingType)
    );
    for (value, found) in [
        ("1", JsonType::Number),
        ("null", JsonType::Null),
        ("true", JsonType::Bool),
        (r#"["bounce"]"#, JsonType::Array),
        (r#"{"bounce":1}"#, JsonType::Object),
    ] {
        let want = DecodeError::InvalidField {
            field: "type",
            reason: FieldError::WrongType {
                expected: Expected::String,
                found,
            },
        };
        let text = format!(r#"{{"type":{value}}}"#);
        assert_eq!(decode_inbox(text.as_bytes()), Err(want.clone()));
        let text = format!(r#"{{"x":0,"type":{value}}}"#);
        assert_eq!(decode_campaign(text.as_bytes()), Err(want));
    }
    // Type names are case-sensitive: `Bounce` is a type this version does not know.
    assert!(matches!(
        decode_inbox(br#"{"type":"Bounce","email":"a"}"#),
        Ok(InboxEvent::Unknown(_))
    ));
}

#[test]
fn not_an_object() {
    for text in [
        "[]",
        "[1,2]",
        "1",
        "-1",
        "1.5",
        "\"bounce\"",
        "true",
        "null",
        " [ {\"type\":\"bounce\"} ]",
    ] {
        assert_eq!(
            decode_inbox(text.as_bytes()),
            Err(DecodeError::NotAnObject),
            "{text}"
        );
        assert_eq!(
            decode_campaign(text.as_bytes()),
            Err(DecodeError::NotAnObject),
            "{text}"
        );
    }
}

#[test]
fn malformed_json_is_a_syntax_error_with_a_position() {
    let ok = r#"{"type":"complaint","email":"a@b","complainedAt":"2026-05-27T10:15:00Z"}"#;
    assert!(decode_inbox(ok.as_bytes()).is_ok());
    let cases: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"   ".to_vec(),
        format!("{ok}x").into_bytes(),
        format!("{ok}{ok}").into_bytes(),
        format!("{ok},").into_bytes(),
        ok.as_bytes()[..ok.len() - 1].to_vec(),
        ok.as_bytes()[..10].to_vec(),
        ok.replace("\"email\"", "email").into_bytes(),
        ok.replace(':', "=").into_bytes(),
        ok.replace("a@b", "a\u{1}b").into_bytes(), // raw control character in a string
        ok.replace("a@b", "a\\qb").into_bytes(),   // bad escape
        ok.replace("a@b", "\\ud800").into_bytes(), // lone surrogate
        {
            let mut v = ok.as_bytes().to_vec();
            v[30] = 0xff; // inside "a@b": invalid UTF-8
            v
        },
        {
            let mut v = b"\xef\xbb\xbf".to_vec(); // a BOM is not JSON
            v.extend_from_slice(ok.as_bytes());
            v
        },
        br#"{"type":"complaint",}"#.to_vec(),
        // Out of f64 range in a field we read (in one we skip, JSON has no range to check).
        br#"{"type":"campaign_started","campaignId":"c","total":1e400}"#.to_vec(),
    ];
    for text in cases {
        match decode_inbox(&text) {
            Err(DecodeError::Syntax {
                line,
                column,
                message,
            }) => {
                assert!(
                    line >= 1 && !message.is_empty(),
                    "{line}:{column} {message}"
                );
                assert!(!message.contains(" at line "), "{message}");
            }
            other => panic!("{}: {other:?}", String::from_utf8_lossy(&text)),
        }
    }
    // Invalid UTF-8 is found before parsing, at its own position.
    assert_eq!(
        decode_inbox(b"{\"type\":\"x\",\n\"a\":\"\xff\"}"),
        Err(DecodeError::Syntax {
            line: 2,
            column: 6,
            message: "invalid UTF-8".into()
        })
    );
    assert_eq!(
        decode_inbox(b"\xc3"),
        Err(DecodeError::Syntax {
            line: 1,
            column: 1,
            message: "invalid UTF-8".into()
        })
    );
    match decode_inbox(b"{\n\"type\":\"bounce\",\n  !}") {
        Err(DecodeError::Syntax { line, column, .. }) => assert_eq!((line, column), (3, 3)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn size_limit_is_checked_before_parsing() {
    let ok = br#"{"type":"cancelled","campaignId":"c"}"#;
    let n = ok.len();
    assert!(Decoder::new(n).campaign(ok).is_ok());
    assert_eq!(
        Decoder::new(n - 1).campaign(ok),
        Err(DecodeError::TooLarge { len: n, max: n - 1 })
    );
    // Not parsed at all: garbage over the limit is TooLarge, not a syntax error.
    assert_eq!(
        Decoder::new(4).inbox(b"garbage"),
        Err(DecodeError::TooLarge { len: 7, max: 4 })
    );
    assert_eq!(
        Decoder::new(0).decode(Inbox, b"{}"),
        Err(DecodeError::TooLarge { len: 2, max: 0 })
    );
    assert_eq!(Decoder::default().max_len(), DEFAULT_MAX_LEN);
    assert_eq!(DEFAULT_MAX_LEN, 64 * 1024);
    let big = format!(
        r#"{{"type":"failed","campaignId":"c","error":"{}"}}"#,
        "e".repeat(DEFAULT_MAX_LEN)
    );
    assert_eq!(
        decode_campaign(big.as_bytes()),
        Err(DecodeError::TooLarge {
            len: big.len(),
            max: DEFAULT_MAX_LEN
        })
    );
    assert!(Decoder::new(big.len()).campaign(big.as_bytes()).is_ok());
}

#[test]
fn deep_nesting_is_bounded() {
    let depth = 100_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let decoder = Decoder::new(8 * depth);
    // Inside an unknown field of a known type, and inside an unknown type: skipped, no overflow.
    let text = format!(r#"{{"type":"cancelled","campaignId":"c","deep":{nested}}}"#);
    assert!(matches!(
        decoder.campaign(text.as_bytes()),
        Ok(CampaignEvent::Cancelled(_))
    ));
    let text = format!(r#"{{"type":"future","deep":{nested}}}"#);
    assert!(matches!(
        decoder.campaign(text.as_bytes()),
        Ok(CampaignEvent::Unknown(_))
    ));
    // Before `type` (the slow path skips it twice).
    let text = format!(r#"{{"deep":{nested},"type":"cancelled","campaignId":"c"}}"#);
    assert!(matches!(
        decoder.campaign(text.as_bytes()),
        Ok(CampaignEvent::Cancelled(_))
    ));
    // In a field we read: refused at the first bracket.
    let text = format!(r#"{{"type":"cancelled","campaignId":{nested}}}"#);
    assert_eq!(
        decoder.campaign(text.as_bytes()),
        Err(DecodeError::InvalidField {
            field: "campaignId",
            reason: FieldError::WrongType {
                expected: Expected::String,
                found: JsonType::Array
            }
        })
    );
    // Unbalanced: a syntax error, not a crash.
    let text = format!(r#"{{"type":"future","deep":{}}}"#, "[".repeat(depth));
    assert!(matches!(
        decoder.campaign(text.as_bytes()),
        Err(DecodeError::Syntax { .. })
    ));
    let text = format!(r#"{{"type":"future","deep":{}}}"#, "{\"a\":".repeat(depth));
    assert!(matches!(
        decoder.campaign(text.as_bytes()),
        Err(DecodeError::Syntax { .. })
    ));
    // At top level: not an object, decided at the first bracket.
    assert_eq!(
        decoder.campaign(nested.as_bytes()),
        Err(DecodeError::NotAnObject)
    );
}

#[test]
fn seed_examples_decode() {
    let email = b"{\n  \"type\": \"email_received\",\n  \"from\": \"[email protected]\",\n  \"subject\": \"Re: Your email\",\n  \"receivedAt\": \"2026-05-27T10:15:00Z\"\n}";
    assert_eq!(
        decode_inbox(email),
        Ok(InboxEvent::EmailReceived(EmailReceived::new(
            "[email protected]",
            "Re: Your email",
            Timestamp::parse("2026-05-27T10:15:00Z").unwrap()
        )))
    );
    let completed = b"{\n  \"type\": \"campaign_completed\",\n  \"campaignId\": \"uuid\",\n  \"campaignName\": \"May Newsletter\",\n  \"sent\": 10000,\n  \"delivered\": 9855,\n  \"opened\": 2340,\n  \"completedAt\": \"2026-05-27T11:00:00Z\"\n}";
    assert_eq!(
        decode_inbox(completed),
        Ok(InboxEvent::CampaignCompleted(CampaignCompleted::new(
            cid("uuid"),
            "May Newsletter",
            10000,
            9855,
            2340,
            Timestamp::parse("2026-05-27T11:00:00Z").unwrap()
        )))
    );
    let progress = b"{\n  \"type\": \"progress\",\n  \"campaignId\": \"uuid\",\n  \"sent\": 2500,\n  \"total\": 10000,\n  \"delivered\": 2480,\n  \"bounced\": 20,\n  \"opened\": 450\n}";
    assert_eq!(
        decode_campaign(progress),
        Ok(CampaignEvent::Progress(Progress::new(
            cid("uuid"),
            2500,
            10000,
            2480,
            20,
            450
        )))
    );
    let done = b"{\n  \"type\": \"completed\",\n  \"campaignId\": \"uuid\",\n  \"sent\": 10000,\n  \"delivered\": 9855,\n  \"bounced\": 145,\n  \"opened\": 2340\n}";
    let event = decode_campaign(done).unwrap();
    assert_eq!(
        event,
        CampaignEvent::Completed(Completed::new(cid("uuid"), 10000, 9855, 145, 2340))
    );
    assert!(event.is_terminal());
    assert_eq!(
        event.encode().bytes().as_ref(),
        br#"{"type":"completed","campaignId":"uuid","sent":10000,"delivered":9855,"bounced":145,"opened":2340}"#
    );
}

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

/// One fully populated value per type, with the exact encoding each must have.
fn every_type() -> Vec<(Event, &'static str)> {
    vec![
        (
            EmailReceived::new(
                "Ana <ana@example.com>",
                "Re: \"Q3\"\n\tplan \\ ✓",
                ts("2026-05-27T10:15:00Z"),
            )
            .with_message_id("<m1@x>")
            .with_to("me@example.com")
            .into(),
            r#"{"type":"email_received","from":"Ana <ana@example.com>","subject":"Re: \"Q3\"\n\tplan \\ ✓","receivedAt":"2026-05-27T10:15:00Z","messageId":"<m1@x>","to":"me@example.com"}"#,
        ),
        (
            Bounce::new("x@y", ts("2026-05-27T10:15:00.123+02:00"))
                .with_bounce_type(BounceType::Soft)
                .with_reason("mailbox full")
                .with_campaign_id(cid("c1"))
                .into(),
            r#"{"type":"bounce","email":"x@y","bounceType":"soft","reason":"mailbox full","campaignId":"c1","bouncedAt":"2026-05-27T10:15:00.123+02:00"}"#,
        ),
        (
            Complaint::new("x@y", ts("2026-05-27T10:15:00Z"))
                .with_campaign_id(cid("c1"))
                .into(),
            r#"{"type":"complaint","email":"x@y","campaignId":"c1","complainedAt":"2026-05-27T10:15:00Z"}"#,
        ),
        (
            Unsubscribe::new("x@y", ts("2026-05-27T10:15:00Z")).into(),
            r#"{"type":"unsubscribe","email":"x@y","unsubscribedAt":"2026-05-27T10:15:00Z"}"#,
        ),
        (
            CampaignStarted::new(cid("c1"), "May", 10000, ts("2026-05-27T10:00:00Z")).into(),
            r#"{"type":"campaign_started","campaignId":"c1","campaignName":"May","total":10000,"startedAt":"2026-05-27T10:00:00Z"}"#,
        ),
        (
            CampaignCompleted::new(cid("c1"), "May", 0, u64::MAX, 1, ts("2026-05-27T11:00:00Z"))
                .into(),
            r#"{"type":"campaign_completed","campaignId":"c1","campaignName":"May","sent":0,"delivered":18446744073709551615,"opened":1,"completedAt":"2026-05-27T11:00:00Z"}"#,
        ),
        (
            Progress::new(cid("c1"), 1, 2, 3, 4, 5).into(),
            r#"{"type":"progress","campaignId":"c1","sent":1,"total":2,"delivered":3,"bounced":4,"opened":5}"#,
        ),
        (
            Completed::new(cid("c1"), 1, 2, 3, 4)
                .with_completed_at(ts("2026-05-27T11:00:00Z"))
                .into(),
            r#"{"type":"completed","campaignId":"c1","sent":1,"delivered":2,"bounced":3,"opened":4,"completedAt":"2026-05-27T11:00:00Z"}"#,
        ),
        (
            Failed::new(cid("c1"), "smtp relay down")
                .with_sent(12)
                .with_failed_at(ts("2026-05-27T11:00:00Z"))
                .into(),
            r#"{"type":"failed","campaignId":"c1","error":"smtp relay down","sent":12,"failedAt":"2026-05-27T11:00:00Z"}"#,
        ),
        (
            Cancelled::new(cid("c1"))
                .with_cancelled_at(ts("2026-05-27T11:00:00Z"))
                .into(),
            r#"{"type":"cancelled","campaignId":"c1","cancelledAt":"2026-05-27T11:00:00Z"}"#,
        ),
    ]
}

#[test]
fn every_type_encodes_exactly_and_round_trips() {
    for (event, text) in every_type() {
        let encoded = event.encode();
        assert_eq!(std::str::from_utf8(encoded.bytes()).unwrap(), text);
        assert_eq!(encoded.len(), text.len());
        assert!(!encoded.is_empty());
        assert_eq!(decode(event.channel(), encoded.bytes()), Ok(event.clone()));
        // serde_json agrees that it is one JSON object with `type` first.
        let v: serde_json::Value = serde_json::from_slice(encoded.bytes()).unwrap();
        assert_eq!(v["type"], event.type_name());
        assert!(text.starts_with(&format!(r#"{{"type":"{}","#, event.type_name())));
        // The channel enums encode the same bytes as `Event`.
        match &event {
            Event::Inbox(e) => assert_eq!(e.encode(), encoded),
            Event::Campaign(e) => assert_eq!(e.encode(), encoded),
            _ => unreachable!(),
        }
        // encode_into appends.
        let mut buf = b"prefix".to_vec();
        event.encode_into(&mut buf);
        assert_eq!(&buf[..6], b"prefix");
        assert_eq!(&buf[6..], text.as_bytes());
    }
}

#[test]
fn classes_names_and_campaign_ids() {
    let want: &[(&str, EventClass, Option<&str>, bool)] = &[
        ("email_received", EventClass::Ordinary, None, false),
        ("bounce", EventClass::Ordinary, Some("c1"), false),
        ("complaint", EventClass::Ordinary, Some("c1"), false),
        ("unsubscribe", EventClass::Ordinary, None, false),
        ("campaign_started", EventClass::Ordinary, Some("c1"), false),
        (
            "campaign_completed",
            EventClass::Ordinary,
            Some("c1"),
            false,
        ),
        ("progress", EventClass::Progress, Some("c1"), false),
        ("completed", EventClass::Terminal, Some("c1"), true),
        ("failed", EventClass::Terminal, Some("c1"), true),
        ("cancelled", EventClass::Terminal, Some("c1"), true),
    ];
    let all = every_type();
    assert_eq!(all.len(), want.len());
    for ((event, _), &(name, class, id, terminal)) in all.iter().zip(want) {
        assert_eq!(event.type_name(), name);
        assert_eq!(event.class(), class, "{name}");
        assert_eq!(event.encode().class(), class, "{name}");
        assert_eq!(event.campaign_id().map(|c| c.as_str()), id, "{name}");
        match event {
            Event::Campaign(e) => {
                assert_eq!(e.is_terminal(), terminal);
                assert_eq!(e.class(), class);
            }
            Event::Inbox(e) => {
                assert!(!terminal);
                assert_eq!(e.class(), EventClass::Ordinary);
            }
            _ => unreachable!(),
        }
    }
}

#[test]
fn bounce_types() {
    let base = |bt: &str| {
        format!(
            r#"{{"type":"bounce","email":"x@y","bounceType":{bt},"bouncedAt":"2026-05-27T10:15:00Z"}}"#
        )
    };
    let bt = |text: &str| match decode_inbox(text.as_bytes()) {
        Ok(InboxEvent::Bounce(b)) => b.bounce_type,
        other => panic!("{other:?}"),
    };
    assert_eq!(bt(&base(r#""hard""#)), Some(BounceType::Hard));
    assert_eq!(bt(&base(r#""soft""#)), Some(BounceType::Soft));
    assert_eq!(
        bt(&base(r#""blocked""#)),
        Some(BounceType::Other("blocked".into()))
    );
    assert_eq!(
        bt(&base(r#""HARD""#)),
        Some(BounceType::Other("HARD".into()))
    );
    assert_eq!(bt(&base("null")), None);
    for (value, found) in [
        ("5", JsonType::Number),
        ("true", JsonType::Bool),
        (r#"["hard"]"#, JsonType::Array),
    ] {
        assert_eq!(
            decode_inbox(base(value).as_bytes()),
            Err(DecodeError::InvalidField {
                field: "bounceType",
                reason: FieldError::WrongType {
                    expected: Expected::String,
                    found
                }
            })
        );
    }
    // An unknown bounce type survives a round trip.
    let text = base(r#""blocked""#);
    assert_eq!(
        decode_inbox(text.as_bytes())
            .unwrap()
            .encode()
            .bytes()
            .as_ref(),
        text.as_bytes()
    );
    assert_eq!(BounceType::from_wire("hard"), BounceType::Hard);
    assert_eq!(BounceType::from_wire("soft"), BounceType::Soft);
    assert_eq!(BounceType::from_wire("x").as_str(), "x");
    assert_eq!(BounceType::Hard.as_str(), "hard");
}

#[test]
fn strings_escape_and_unescape() {
    let nasty = "\u{0}\u{1f}\"\\/\u{7f}\u{80}\u{2028}é日本🦀\r\n\t\u{8}\u{c}";
    let event: Event = Failed::new(cid("c-1"), nasty.repeat(3)).into();
    let encoded = event.encode();
    let text = std::str::from_utf8(encoded.bytes()).unwrap();
    // No raw control characters on the wire.
    assert!(!text.bytes().any(|b| b < 0x20), "{text}");
    assert_eq!(decode(Campaign, encoded.bytes()), Ok(event));
    // Escaped keys and values in the input are understood.
    let escaped = br#"{"\u0074ype":"c\u0061ncelled","c\u0061mpaignId":"\u0063-\u0031"}"#;
    assert_eq!(
        decode_campaign(escaped),
        Ok(CampaignEvent::Cancelled(Cancelled::new(cid("c-1"))))
    );
    // An escaped character that is not allowed in a campaign id is refused once unescaped.
    assert_eq!(
        decode_campaign(br#"{"type":"cancelled","campaignId":"\ud83e\udd80\/"}"#),
        Err(DecodeError::InvalidField {
            field: "campaignId",
            reason: FieldError::CampaignId(CampaignIdError::InvalidCharacter { position: 0 })
        })
    );
}

#[test]
fn errors_display_the_field() {
    let e = decode_inbox(br#"{"type":"bounce","email":"a"}"#).unwrap_err();
    assert_eq!(e.to_string(), "missing field `bouncedAt`");
    let e = decode_campaign(br#"{"type":"progress","campaignId":1}"#).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid field `campaignId`: expected a string, found a number"
    );
    let e = decode_campaign(
        br#"{"type":"cancelled","campaignId":"c","cancelledAt":"2026-02-30T00:00:00Z"}"#,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid field `cancelledAt`: day out of range for the month"
    );
    assert_eq!(
        DecodeError::WrongChannel { kind: "progress" }.to_string(),
        "`progress` is not an event of this channel"
    );
}

/// A campaign id from a literal the test knows to be valid.
fn cid(id: &str) -> misar_proto::route::CampaignId {
    misar_proto::route::CampaignId::new(id).expect("a valid campaign id")
}

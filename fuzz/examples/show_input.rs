//! Prints a fuzz input the way its target reads it, e.g. a crash libFuzzer saved:
//!
//! ```text
//! cd fuzz && cargo run --example show_input -- server_session artifacts/server_session/crash-…
//! ```
//!
//! Structured targets print their setup and operations; the others print the bytes as text.

use misar_proto_fuzz::{client_session, request, server_session, streams};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(target), Some(path)) = (args.next(), args.next()) else {
        eprintln!("usage: show_input <target> <file>");
        std::process::exit(2);
    };
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(2);
        }
    };
    match target.as_str() {
        "server_session" => match server_session::parse(&data) {
            Some((setup, ops)) => {
                println!("{setup:#?}");
                for op in ops {
                    println!("{op:?}");
                }
            }
            None => println!("(no setup)"),
        },
        "client_session" => match client_session::parse(&data) {
            Some((setup, ops)) => {
                println!("{setup:#?}");
                for op in ops {
                    println!("{op:?}");
                }
            }
            None => println!("(no setup)"),
        },
        "streams" => match streams::parse(&data) {
            Some((setup, ops)) => {
                println!("{setup:#?}");
                println!("{:#?}", setup.config());
                for op in ops {
                    println!("{op:?}");
                }
            }
            None => println!("(no setup)"),
        },
        "credentials" => println!("{:#?}", request::parse(&data)),
        "handshake" => {
            println!("control: {:?}", data.get(..5));
            println!("{:#?}", request::parse(data.get(5..).unwrap_or_default()));
        }
        _ => println!("{:?}", String::from_utf8_lossy(&data)),
    }
}

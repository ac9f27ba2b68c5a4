//! Hostile plugins for runql's sandbox tests, written against the raw contract (no SDK) so
//! that they can break it. One crate, three builds (plugins/build.rs makes each):
//!
//! - default, `hostile`: `--option mode=…` picks the misbehaviour, at `feed`: `loop` (never
//!   returns), `memory` (allocates until it cannot), `panic`, `output` (returns 40 MiB of
//!   rows), `ipc` (returns bytes that are not Arrow IPC), `table` (rows for a table it did not
//!   declare), anything else: behaves (one row per feed);
//! - feature `fs`, `snoop`: reads a host file, so its component imports `wasi:filesystem`,
//!   which runql does not grant: loading it must fail with an error naming the import;
//! - feature `v2`, `future`: built against a future contract (`runql:plugin@2.0.0`, otherwise
//!   the same WIT, in `wit-v2/`): runql must refuse it by its version rather than fail in
//!   some later call.

#![cfg(target_family = "wasm")]
// wit-bindgen's export glue (the canonical ABI) is unsafe code generated into this crate.
#![allow(unsafe_code)]

#[cfg(not(feature = "v2"))]
wit_bindgen::generate!({ world: "plugin", path: "../../wit" });
#[cfg(feature = "v2")]
wit_bindgen::generate!({ world: "plugin", path: "wit-v2" });

use exports::runql::plugin::parser::{Guest, GuestSession, Info, Rows};
use runql::plugin::types::Table;

struct Hostile;

/// An Arrow IPC stream with one Int64 column `n` and one row, and the same schema alone,
/// written once by pyarrow (`pa.ipc.new_stream`), so this crate needs no arrow.
#[cfg(not(feature = "fs"))]
const ONE_ROW: &[u8] = include_bytes!("one_row.arrows");
const SCHEMA: &[u8] = include_bytes!("schema.arrows");

impl Guest for Hostile {
    type Session = Session;

    fn describe() -> Info {
        let (name, version, description) = if cfg!(feature = "fs") {
            ("snoop", "0.0.1", "tries to read /etc/passwd")
        } else if cfg!(feature = "v2") {
            ("future", "2.0.0", "speaks a contract from the future")
        } else {
            ("hostile", "0.0.1", "misbehaves on purpose")
        };
        Info {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            formats: vec!["anything".into()],
            tables: vec![Table {
                name: "rows".into(),
                doc: "one row per chunk".into(),
                schema: SCHEMA.to_vec(),
            }],
        }
    }

    fn recognize(_name: String, _head: Vec<u8>) -> u8 {
        0
    }
}

struct Session {
    mode: String,
}

impl GuestSession for Session {
    fn new(_name: String, options: Vec<(String, String)>) -> Self {
        let mode = options
            .into_iter()
            .find(|(k, _)| k == "mode")
            .map(|(_, v)| v)
            .unwrap_or_default();
        Session { mode }
    }

    fn feed(&self, _chunk: Vec<u8>) -> Result<Vec<Rows>, String> {
        misbehave(&self.mode)
    }

    fn finish(&self) -> Result<Vec<Rows>, String> {
        Ok(Vec::new())
    }
}

/// `snoop`: reads a host file (the only build that touches `std::fs`, so the only component
/// that imports `wasi:filesystem`).
#[cfg(feature = "fs")]
fn misbehave(_mode: &str) -> Result<Vec<Rows>, String> {
    std::fs::read_to_string("/etc/passwd")
        .map(|_| Vec::new())
        .map_err(|e| e.to_string())
}

#[cfg(not(feature = "fs"))]
fn misbehave(mode: &str) -> Result<Vec<Rows>, String> {
    match mode {
        "loop" => {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        "memory" => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut block = vec![1u8; 16 << 20];
                block[0] = hoard.len() as u8;
                hoard.push(std::hint::black_box(block));
            }
        }
        "panic" => panic!("the hostile plugin panics on purpose"),
        "output" => {
            // 40 MiB of rows in 1 MiB pieces: within a 64 MiB memory, beyond a 32 MiB output.
            let piece = vec![0u8; 1 << 20];
            Ok((0..40)
                .map(|_| Rows {
                    table: "rows".into(),
                    ipc: piece.clone(),
                })
                .collect())
        }
        "ipc" => Ok(vec![Rows {
            table: "rows".into(),
            ipc: b"this is not arrow ipc at all".to_vec(),
        }]),
        "table" => Ok(vec![Rows {
            table: "undeclared".into(),
            ipc: ONE_ROW.to_vec(),
        }]),
        _ => Ok(vec![Rows {
            table: "rows".into(),
            ipc: ONE_ROW.to_vec(),
        }]),
    }
}

export!(Hostile);

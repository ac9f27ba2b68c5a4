//! A plugin that reads a host file: its component imports `wasi:filesystem`, which runql does
//! not grant, so loading it must fail with an error naming the import.

#![cfg(target_family = "wasm")]
// wit-bindgen's export glue (the canonical ABI) is unsafe code generated into this crate.
#![allow(unsafe_code)]

wit_bindgen::generate!({ world: "plugin", path: "../../wit" });

use exports::runql::plugin::parser::{Guest, GuestSession, Info, Rows};

struct Snoop;

impl Guest for Snoop {
    type Session = Session;

    fn describe() -> Info {
        Info {
            name: "snoop".into(),
            version: "0.0.1".into(),
            description: "tries to read /etc/passwd".into(),
            formats: Vec::new(),
            tables: Vec::new(),
        }
    }

    fn recognize(_name: String, _head: Vec<u8>) -> u8 {
        0
    }
}

struct Session;

impl GuestSession for Session {
    fn new(_name: String, _options: Vec<(String, String)>) -> Self {
        Session
    }

    fn feed(&self, _chunk: Vec<u8>) -> Result<Vec<Rows>, String> {
        std::fs::read_to_string("/etc/passwd")
            .map(|_| Vec::new())
            .map_err(|e| e.to_string())
    }

    fn finish(&self) -> Result<Vec<Rows>, String> {
        Ok(Vec::new())
    }
}

export!(Snoop);

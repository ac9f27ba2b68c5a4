//! A plugin built against a future contract (`runql:plugin@2.0.0`, otherwise the same WIT):
//! runql must refuse it by its version rather than fail in some later call.

#![cfg(target_family = "wasm")]
// wit-bindgen's export glue (the canonical ABI) is unsafe code generated into this crate.
#![allow(unsafe_code)]

wit_bindgen::generate!({ world: "plugin", path: "wit" });

use exports::runql::plugin::parser::{Guest, GuestSession, Info, Rows};

struct Future;

impl Guest for Future {
    type Session = Session;

    fn describe() -> Info {
        Info {
            name: "future".into(),
            version: "2.0.0".into(),
            description: "speaks a contract from the future".into(),
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
        Ok(Vec::new())
    }

    fn finish(&self) -> Result<Vec<Rows>, String> {
        Ok(Vec::new())
    }
}

export!(Future);

//! Which plugins runql can use: the first-party ones compiled into runql (`builtin`), and
//! those installed into the store from `.wasm` files, each pinned by its sha256.
//!
//! An installed plugin is `plugins/<name>/plugin.json` (its description, tables and sha256)
//! beside `plugins/<name>/<sha256>.wasm`. Loading checks the bytes against the recorded digest,
//! so a component swapped behind runql's back is refused. An installed plugin with the name of
//! a first-party one takes its place (a newer build, say); removing it brings the first-party
//! one back.

use std::sync::Arc;

use bytes::Bytes;
use runql_core::Store;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::sandbox::{Limits, Loaded, PluginInfo, Sandbox};
use crate::{Error, Result};

/// A first-party plugin shipped inside runql: its name and component.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    pub name: &'static str,
    pub wasm: &'static [u8],
}

/// The first-party plugins, built to wasm32-wasip2 by build.rs.
pub const BUILTIN: &[Builtin] = &[
    Builtin {
        name: "optuna",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/optuna.wasm")),
    },
    Builtin {
        name: "llm",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/llm.wasm")),
    },
    Builtin {
        name: "rl",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/rl.wasm")),
    },
    Builtin {
        name: "tensorboard",
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/tensorboard.wasm")),
    },
];

/// What `runql plugin list` and `info` show of a plugin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstalledPlugin {
    pub name: String,
    pub version: String,
    pub description: String,
    pub sha256: String,
    /// The contract version it implements.
    pub contract: String,
    pub formats: Vec<String>,
    /// (name, doc) of each table, queried as `<plugin>.<name>`.
    pub tables: Vec<(String, String)>,
    /// Shipped with runql rather than installed.
    #[serde(default)]
    pub builtin: bool,
}

impl InstalledPlugin {
    fn from_info(info: &PluginInfo, sha256: &str, builtin: bool) -> InstalledPlugin {
        InstalledPlugin {
            name: info.name.clone(),
            version: info.version.clone(),
            description: info.description.clone(),
            sha256: sha256.to_string(),
            contract: crate::sandbox::CONTRACT_VERSION.to_string(),
            formats: info.formats.clone(),
            tables: info
                .tables
                .iter()
                .map(|t| (t.name.clone(), t.doc.clone()))
                .collect(),
            builtin,
        }
    }
}

/// A plugin ready to run: its record, its loaded component and its full description.
#[derive(Debug)]
pub struct Ready {
    pub plugin: InstalledPlugin,
    pub info: PluginInfo,
    pub loaded: Loaded,
}

/// The plugins of one store.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Store,
    sandbox: Arc<Sandbox>,
    limits: Limits,
}

/// A plugin name is a SQL schema: lowercase letters, digits, underscores.
fn check_name(name: &str, what: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok
        && ![
            "public",
            "information_schema",
            "runql",
            "pg_catalog",
            "main",
        ]
        .contains(&name)
    {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: what.to_string(),
            message: format!(
                "its name {name:?} is not usable as a SQL schema (1-64 lowercase letters, \
                 digits, underscores; not a reserved name)"
            ),
        })
    }
}

impl Registry {
    pub fn new(store: Store, sandbox: Arc<Sandbox>) -> Registry {
        Registry {
            store,
            sandbox,
            limits: Limits::default(),
        }
    }

    /// Limits for the calls the registry makes (info at install and load).
    pub fn with_limits(mut self, limits: Limits) -> Registry {
        self.limits = limits;
        self
    }

    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn load_blocking(&self, what: &str, wasm: &[u8]) -> Result<(Loaded, PluginInfo)> {
        let loaded = self.sandbox.load(what, wasm)?;
        let info = loaded.info(&self.sandbox, &self.limits)?;
        Ok((loaded, info))
    }

    async fn installed_record(&self, name: &str) -> Result<Option<InstalledPlugin>> {
        let path = self.store.layout().plugin_record(name);
        match self.store.plugin_record(name).await? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Store(runql_core::Error::corrupt(&path, e))),
            None => Ok(None),
        }
    }

    async fn installed_names(&self) -> Result<Vec<String>> {
        Ok(self.store.plugin_names().await?)
    }

    /// Every usable plugin, by name: installed ones, then the first-party ones they do not
    /// replace.
    pub async fn list(&self) -> Result<Vec<InstalledPlugin>> {
        let mut out = Vec::new();
        for name in self.installed_names().await? {
            if let Some(p) = self.installed_record(&name).await? {
                out.push(p);
            }
        }
        for b in BUILTIN {
            if out.iter().any(|p| p.name == b.name) {
                continue;
            }
            let this = self.clone();
            let ready = tokio::task::spawn_blocking(move || this.builtin(b))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
            out.push(ready.plugin);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn builtin(&self, b: &Builtin) -> Result<Ready> {
        let (loaded, info) = self.load_blocking(b.name, b.wasm)?;
        Ok(Ready {
            plugin: InstalledPlugin::from_info(&info, loaded.sha256(), true),
            info,
            loaded,
        })
    }

    /// A plugin ready to run.
    pub async fn get(&self, name: &str) -> Result<Ready> {
        if let Some(record) = self.installed_record(name).await? {
            let path = self.store.layout().plugin_wasm(name, &record.sha256);
            let wasm = self
                .store
                .plugin_wasm(name, &record.sha256)
                .await?
                .ok_or_else(|| Error::Invalid {
                    what: format!("plugin {name}"),
                    message: format!(
                        "its component {path} is missing from the store; install it again"
                    ),
                })?;
            let digest = hex::encode(sha2::Sha256::digest(&wasm));
            if digest != record.sha256 {
                return Err(Error::Invalid {
                    what: format!("plugin {name}"),
                    message: format!(
                        "its component's sha256 is {digest}, not the {} it was installed with; \
                         install it again if the change is yours",
                        record.sha256
                    ),
                });
            }
            let this = self.clone();
            let what = format!("plugin {name}");
            let (loaded, info) =
                tokio::task::spawn_blocking(move || this.load_blocking(&what, &wasm))
                    .await
                    .map_err(|e| Error::Internal(e.to_string()))??;
            return Ok(Ready {
                plugin: record,
                info,
                loaded,
            });
        }
        let b = BUILTIN
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| Error::Unknown {
                name: name.to_string(),
            })?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.builtin(b))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
    }

    /// Installs a component: checks that it loads and answers `info`, then stores it pinned
    /// by its sha256. Installing the same name again replaces the previous version.
    pub async fn install(&self, what: &str, wasm: Bytes) -> Result<InstalledPlugin> {
        let this = self.clone();
        let (w, owned) = (what.to_string(), wasm.clone());
        let (loaded, info) = tokio::task::spawn_blocking(move || this.load_blocking(&w, &owned))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        check_name(&info.name, what)?;
        for t in &info.tables {
            check_name(&t.name, &format!("{what} (table {})", t.name))?;
        }
        let record = InstalledPlugin::from_info(&info, loaded.sha256(), false);
        let body =
            serde_json::to_vec_pretty(&record).map_err(|e| Error::Internal(e.to_string()))?;
        self.store
            .install_plugin(&record.name, &record.sha256, wasm, Bytes::from(body))
            .await?;
        Ok(record)
    }

    /// Removes an installed plugin (its tables and rows stay in the store).
    pub async fn remove(&self, name: &str) -> Result<InstalledPlugin> {
        let Some(record) = self.installed_record(name).await? else {
            if BUILTIN.iter().any(|b| b.name == name) {
                return Err(Error::Invalid {
                    what: format!("plugin {name}"),
                    message: "it ships with runql and cannot be removed (install another \
                              build under the same name to replace it)"
                        .into(),
                });
            }
            return Err(Error::Unknown {
                name: name.to_string(),
            });
        };
        self.store.remove_plugin(name, &record.sha256).await?;
        Ok(record)
    }
}

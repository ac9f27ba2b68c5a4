//! The `public` schema of an engine: the store's core tables, the wide pivot tables and the
//! `projects` table computed when a query names them, and any tables the embedding program registers beside them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::{Result as DFResult, plan_err};
use datafusion::datasource::TableType;
use datafusion::execution::object_store::ObjectStoreUrl;
use runql_core::Store;
use runql_core::schema::Table;

use crate::table::StoreTable;
use crate::wide::{WIDE_TABLES, wide_table};

/// The schema every query sees by default.
#[derive(Debug)]
pub(crate) struct RunqlSchema {
    store: Store,
    core: BTreeMap<&'static str, Arc<dyn TableProvider>>,
    user: RwLock<HashMap<String, Arc<dyn TableProvider>>>,
}

impl RunqlSchema {
    pub(crate) fn new(store: Store, objects: ObjectStoreUrl) -> RunqlSchema {
        let core = Table::ALL
            .iter()
            .map(|t| {
                let provider: Arc<dyn TableProvider> =
                    Arc::new(StoreTable::new(store.clone(), *t, objects.clone()));
                (t.name(), provider)
            })
            .collect();
        RunqlSchema {
            store,
            core,
            user: RwLock::new(HashMap::new()),
        }
    }

    fn is_ours(name: &str) -> bool {
        Table::from_name(name).is_some() || Self::is_computed(name)
    }

    /// A table computed when a query names it: the pivot tables and `projects`.
    fn is_computed(name: &str) -> bool {
        name == crate::projects::NAME || WIDE_TABLES.iter().any(|(n, _)| *n == name)
    }
}

#[async_trait]
impl SchemaProvider for RunqlSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.core.keys().map(|s| s.to_string()).collect();
        names.push(crate::projects::NAME.to_string());
        names.extend(WIDE_TABLES.iter().map(|(n, _)| n.to_string()));
        if let Ok(user) = self.user.read() {
            names.extend(user.keys().cloned());
        }
        names
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.core.get(name) {
            return Ok(Some(t.clone()));
        }
        if name == crate::projects::NAME {
            return crate::projects::projects_table(&self.store).await.map(Some);
        }
        if WIDE_TABLES.iter().any(|(n, _)| *n == name) {
            return wide_table(&self.store, name).await.map(Some);
        }
        Ok(self.user.read().ok().and_then(|u| u.get(name).cloned()))
    }

    async fn table_type(&self, name: &str) -> DFResult<Option<TableType>> {
        // Without building a pivot table (a scan) just to say what kind it is.
        if self.core.contains_key(name) {
            return Ok(Some(TableType::Base));
        }
        if Self::is_computed(name) {
            return Ok(Some(TableType::View));
        }
        Ok(self
            .user
            .read()
            .ok()
            .and_then(|u| u.get(name).map(|t| t.table_type())))
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> DFResult<Option<Arc<dyn TableProvider>>> {
        if Self::is_ours(&name) {
            return plan_err!(
                "cannot register a table named {name}: runql's own table of that name is in \
                 this schema; pick another name"
            );
        }
        match self.user.write() {
            Ok(mut user) => Ok(user.insert(name, table)),
            Err(_) => plan_err!("the table registry is poisoned by an earlier panic"),
        }
    }

    fn deregister_table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        if Self::is_ours(name) {
            return plan_err!("cannot drop {name}: it is one of runql's tables");
        }
        match self.user.write() {
            Ok(mut user) => Ok(user.remove(name)),
            Err(_) => plan_err!("the table registry is poisoned by an earlier panic"),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        Self::is_ours(name) || self.user.read().is_ok_and(|u| u.contains_key(name))
    }
}

//! [`LineageStore`]: opening (schema creation and validation) and the public read/write API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Fault, LineageError};
use crate::read::{self, Cycle};
use crate::schema::{self, SCHEMA_VERSION, State, TypeIds};
use crate::write::{self, model_artifact_name};
use crate::{AdminActionRecord, CycleRecord, CycleSummary, ModelLineage, SpanConsumer};

/// How long a write waits for another process's write transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(15);

/// The lineage store: one SQLite connection to an MLMD schema-v10 database.
pub struct LineageStore {
    conn: Connection,
    path: PathBuf,
    types: TypeIds,
}

impl std::fmt::Debug for LineageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineageStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LineageStore {
    /// Opens the database at `path`, creating it (and MLMD's schema) if it is new. The parent
    /// directory must exist. An existing schema-v10 database — ours or one created by
    /// `ml-metadata` — is accepted (missing indexes and types are added); any other schema
    /// version, or a file that is not an MLMD database, is rejected.
    pub fn open(path: &Path) -> Result<Self, LineageError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
            && !parent.is_dir()
        {
            return Err(LineageError::MissingParentDir {
                path: path.to_path_buf(),
                parent: parent.to_path_buf(),
            });
        }
        let sql = |what: &str| {
            let what = what.to_string();
            move |source| LineageError::Sql {
                path: path.to_path_buf(),
                entity: what,
                source,
            }
        };
        let mut conn = Connection::open(path).map_err(sql("opening the database"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(sql("setting the busy timeout"))?;
        // Switching to WAL takes an exclusive lock and SQLite reports BUSY for it without calling
        // the busy handler, so concurrent first opens retry here, within the busy timeout.
        let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
        loop {
            match conn
                .pragma_update_and_check(None, "journal_mode", "wal", |r| r.get::<_, String>(0))
            {
                Ok(_) => break,
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                Err(e) => return Err(sql("switching to WAL journal mode")(e)),
            }
        }

        let fault = |f: Fault| f.into_error(path, "the MLMD schema");
        let state = schema::inspect(&conn).map_err(fault)?;
        match state {
            State::V10 { complete: true } => {}
            State::Fresh | State::V10 { complete: false } => {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(sql("starting the schema transaction"))?;
                // Someone else may have initialised the file while we waited for the lock.
                match schema::inspect(&tx).map_err(fault)? {
                    State::Fresh => schema::create_tables(&tx).map_err(fault)?,
                    State::V10 { .. } => {}
                    other => return Err(state_error(path, other)),
                }
                schema::create_indexes(&tx).map_err(fault)?;
                schema::type_ids(&tx, true).map_err(fault)?;
                tx.commit().map_err(sql("committing the schema"))?;
            }
            other => return Err(state_error(path, other)),
        }
        let types = schema::type_ids(&conn, false)
            .map_err(fault)?
            .ok_or_else(|| LineageError::Inconsistent {
                path: path.to_path_buf(),
                entity: "the MLMD schema".to_string(),
                reason: "types are still missing after initialisation".to_string(),
            })?;
        Ok(LineageStore {
            conn,
            path: path.to_path_buf(),
            types,
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records one training cycle. Idempotent: recording the same `(model_name, span.name)`
    /// again updates in place, never duplicates (a cycle retried after a crash re-records).
    pub fn record_cycle(&mut self, c: &CycleRecord) -> Result<(), LineageError> {
        let entity = format!("cycle {}/{}", c.model_name, c.span.name);
        self.check_model_name(&c.model_name)?;
        if c.span.name.is_empty() {
            return Err(self.invalid(&entity, "span name is empty"));
        }
        if c.span.uri.is_empty() {
            return Err(self.invalid(&entity, "span uri is empty"));
        }
        let types = self.types;
        self.write(&entity, |conn| write::record_cycle(conn, &types, c))
    }

    /// Records one admin action on a model (rollback, pin, …). Recording an identical action
    /// (same model, action, time, actor, reason and details) again is a no-op.
    pub fn record_admin_action(&mut self, a: &AdminActionRecord) -> Result<(), LineageError> {
        let entity = format!("admin action {} on {}", a.action, a.model_name);
        self.check_model_name(&a.model_name)?;
        if a.action.is_empty() {
            return Err(self.invalid(&entity, "action is empty"));
        }
        let types = self.types;
        self.write(&entity, |conn| write::record_admin_action(conn, &types, a))
    }

    /// How version `version` of `model_name` came to be; `None` if no such version was recorded.
    pub fn model_lineage(
        &self,
        model_name: &str,
        version: u64,
    ) -> Result<Option<ModelLineage>, LineageError> {
        let name = model_artifact_name(model_name, version);
        let entity = format!("lineage of model {name}");
        let fault = |f: Fault| f.into_error(&self.path, &entity);
        let Some((artifact, uri, created_ms)) =
            read::model_artifact(&self.conn, &self.types, &name).map_err(fault)?
        else {
            return Ok(None);
        };
        let Some(train) =
            read::producing_train(&self.conn, &self.types, artifact).map_err(fault)?
        else {
            return Ok(None);
        };
        let c = read::load_cycle(&self.conn, &self.types, train).map_err(fault)?;
        Ok(Some(ModelLineage {
            model_name: model_name.to_string(),
            version,
            uri: uri.unwrap_or_default(),
            parent_version: c.parent_version,
            spans: c.spans,
            hyperparameters_json: c.hyperparameters_json,
            code_version: c.code_version,
            progressive: c.progressive,
            evaluation: c.evaluation,
            gate: c.gate,
            created_ms,
        }))
    }

    /// Every training cycle (any model) that read the span whose artifact name, uri, span name
    /// or uri file name (last path component) equals `span_name_or_uri`, in recording order.
    pub fn span_consumers(
        &self,
        span_name_or_uri: &str,
    ) -> Result<Vec<SpanConsumer>, LineageError> {
        if span_name_or_uri.is_empty() {
            return Ok(Vec::new());
        }
        let entity = format!("consumers of span {span_name_or_uri}");
        let fault = |f: Fault| f.into_error(&self.path, &entity);
        let trains =
            read::trains_reading_span(&self.conn, &self.types, span_name_or_uri).map_err(fault)?;
        let mut out = Vec::with_capacity(trains.len());
        for train in trains {
            let c = read::load_cycle(&self.conn, &self.types, train).map_err(fault)?;
            out.push(SpanConsumer {
                span: c.span(),
                model_name: c.model_name,
                published_version: c.published_version,
                gate_passed: c.gate.passed,
                finished_ms: c.finished_ms,
            });
        }
        Ok(out)
    }

    /// Every recorded cycle of `model_name`, in recording order (a re-recorded cycle keeps its
    /// original place).
    pub fn cycles(&self, model_name: &str) -> Result<Vec<CycleSummary>, LineageError> {
        let entity = format!("cycles of model {model_name}");
        let fault = |f: Fault| f.into_error(&self.path, &entity);
        let ids = read::pipeline_executions(&self.conn, &self.types, model_name, self.types.train)
            .map_err(fault)?;
        ids.into_iter()
            .map(|id| {
                let c: Cycle = read::load_cycle(&self.conn, &self.types, id).map_err(fault)?;
                Ok(CycleSummary {
                    span: c.span(),
                    parent_version: c.parent_version,
                    published_version: c.published_version,
                    gate_passed: c.gate.passed,
                    progressive: c.progressive,
                    finished_ms: c.finished_ms,
                })
            })
            .collect()
    }

    /// Admin actions recorded for `model_name`, oldest first (ties in recording order).
    pub fn admin_actions(&self, model_name: &str) -> Result<Vec<AdminActionRecord>, LineageError> {
        let entity = format!("admin actions of model {model_name}");
        read::admin_actions(&self.conn, &self.types, model_name)
            .map_err(|f| f.into_error(&self.path, &entity))
    }

    /// Runs `f` in one short `BEGIN IMMEDIATE` transaction.
    fn write(
        &mut self,
        entity: &str,
        f: impl FnOnce(&Connection) -> Result<(), Fault>,
    ) -> Result<(), LineageError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| Fault::Sql(e).into_error(&path, entity))?;
        f(&tx).map_err(|e| e.into_error(&path, entity))?;
        tx.commit()
            .map_err(|e| Fault::Sql(e).into_error(&path, entity))
    }

    fn check_model_name(&self, model: &str) -> Result<(), LineageError> {
        let entity = format!("model name {model:?}");
        if model.is_empty() {
            return Err(self.invalid(&entity, "must not be empty"));
        }
        if model.contains('/') {
            return Err(self.invalid(&entity, "must not contain '/'"));
        }
        Ok(())
    }

    fn invalid(&self, entity: &str, reason: &str) -> LineageError {
        LineageError::InvalidInput {
            path: self.path.clone(),
            entity: entity.to_string(),
            reason: reason.to_string(),
        }
    }
}

fn state_error(path: &Path, state: State) -> LineageError {
    let path = path.to_path_buf();
    match state {
        State::NotMlmd(tables) => LineageError::NotMlmd { path, tables },
        State::BadEnv(rows) => LineageError::BadEnv { path, rows },
        State::Version(found) => LineageError::SchemaVersion {
            path,
            found,
            expected: SCHEMA_VERSION,
        },
        State::MissingTable(table) => LineageError::MissingTable {
            path,
            table: table.to_string(),
        },
        State::Fresh | State::V10 { .. } => LineageError::Inconsistent {
            path,
            entity: "the MLMD schema".to_string(),
            reason: "unexpected schema state".to_string(),
        },
    }
}

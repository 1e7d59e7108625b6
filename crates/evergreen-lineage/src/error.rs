//! The crate's error type; every message names the database file and the entity involved.

use std::path::PathBuf;

/// Everything that can go wrong opening, writing or reading the lineage store.
#[derive(Debug, thiserror::Error)]
pub enum LineageError {
    /// The directory that should hold the database does not exist (it is not created).
    #[error("lineage db {}: parent directory {} does not exist", path.display(), parent.display())]
    MissingParentDir {
        /// Database path.
        path: PathBuf,
        /// Its missing parent directory.
        parent: PathBuf,
    },
    /// SQLite reported an error.
    #[error("lineage db {}: SQLite error while {entity}: {source}", path.display())]
    Sql {
        /// Database path.
        path: PathBuf,
        /// What was being done, naming the entity (e.g. `recording cycle ctr/span-3`).
        entity: String,
        /// The underlying error.
        #[source]
        source: rusqlite::Error,
    },
    /// The file holds tables but no `MLMDEnv` table: it is not an ML Metadata database.
    #[error(
        "lineage db {}: not an ML Metadata database (no MLMDEnv table; found tables: {})",
        path.display(),
        tables.join(", ")
    )]
    NotMlmd {
        /// Database path.
        path: PathBuf,
        /// The tables that were found.
        tables: Vec<String>,
    },
    /// `MLMDEnv` does not hold exactly one row.
    #[error("lineage db {}: MLMDEnv must hold exactly one schema_version row, found {rows}", path.display())]
    BadEnv {
        /// Database path.
        path: PathBuf,
        /// Rows found.
        rows: usize,
    },
    /// The database uses another MLMD schema version.
    #[error(
        "lineage db {}: ML Metadata schema version {found} is not supported (this build reads and writes version {expected} only; migrate it with the matching ml-metadata release)",
        path.display()
    )]
    SchemaVersion {
        /// Database path.
        path: PathBuf,
        /// Version found in `MLMDEnv`.
        found: i64,
        /// Version this crate speaks.
        expected: i64,
    },
    /// A schema-v10 database lacks one of MLMD's tables.
    #[error("lineage db {}: claims ML Metadata schema version 10 but table `{table}` is missing", path.display())]
    MissingTable {
        /// Database path.
        path: PathBuf,
        /// The missing table.
        table: String,
    },
    /// The caller passed something the store cannot record.
    #[error("lineage db {}: invalid {entity}: {reason}", path.display())]
    InvalidInput {
        /// Database path.
        path: PathBuf,
        /// The offending entity, e.g. `model name "a/b"`.
        entity: String,
        /// Why it is rejected.
        reason: String,
    },
    /// An unsigned value does not fit MLMD's signed 64-bit INT column.
    #[error("lineage db {}: {entity}: {field} = {value} does not fit a signed 64-bit integer", path.display())]
    OutOfRange {
        /// Database path.
        path: PathBuf,
        /// The entity being written.
        entity: String,
        /// The field.
        field: String,
        /// The value.
        value: u64,
    },
    /// Stored lineage does not have the shape this crate writes (edited by hand or by another tool).
    #[error("lineage db {}: {entity} is inconsistent: {reason}", path.display())]
    Inconsistent {
        /// Database path.
        path: PathBuf,
        /// The entity, e.g. `execution ctr/train/span-3`.
        entity: String,
        /// What is wrong.
        reason: String,
    },
}

/// Path-free failure raised deep inside queries; the public methods attach path and entity.
#[derive(Debug)]
pub(crate) enum Fault {
    Sql(rusqlite::Error),
    OutOfRange { field: String, value: u64 },
    Inconsistent(String),
}

impl From<rusqlite::Error> for Fault {
    fn from(e: rusqlite::Error) -> Self {
        Fault::Sql(e)
    }
}

impl Fault {
    /// Attaches the database path and the entity being worked on.
    pub(crate) fn into_error(self, path: &std::path::Path, entity: &str) -> LineageError {
        let path = path.to_path_buf();
        let entity = entity.to_string();
        match self {
            Fault::Sql(source) => LineageError::Sql {
                path,
                entity,
                source,
            },
            Fault::OutOfRange { field, value } => LineageError::OutOfRange {
                path,
                entity,
                field,
                value,
            },
            Fault::Inconsistent(reason) => LineageError::Inconsistent {
                path,
                entity,
                reason,
            },
        }
    }
}

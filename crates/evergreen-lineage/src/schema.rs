//! ML Metadata's SQLite schema, version 10, verbatim (tables, secondary indexes, `MLMDEnv`), plus
//! MLMD's built-in simple types and Evergreen's own types.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Fault;

/// The MLMD schema version this crate reads and writes.
pub const SCHEMA_VERSION: i64 = 10;

/// MLMD's tables, in MLMD's creation order, with the exact DDL of `ml-metadata` 1.17 (schema 10).
pub(crate) const TABLES: [(&str, &str); 15] = [
    (
        "Type",
        "CREATE TABLE IF NOT EXISTS `Type` ( `id` INTEGER PRIMARY KEY AUTOINCREMENT, \
         `name` VARCHAR(255) NOT NULL, `version` VARCHAR(255), `type_kind` TINYINT(1) NOT NULL, \
         `description` TEXT, `input_type` TEXT, `output_type` TEXT, \
         `external_id` VARCHAR(255) UNIQUE );",
    ),
    (
        "ParentType",
        "CREATE TABLE IF NOT EXISTS `ParentType` ( `type_id` INT NOT NULL, \
         `parent_type_id` INT NOT NULL, PRIMARY KEY (`type_id`, `parent_type_id`));",
    ),
    (
        "TypeProperty",
        "CREATE TABLE IF NOT EXISTS `TypeProperty` ( `type_id` INT NOT NULL, \
         `name` VARCHAR(255) NOT NULL, `data_type` INT NULL, PRIMARY KEY (`type_id`, `name`));",
    ),
    (
        "Artifact",
        "CREATE TABLE IF NOT EXISTS `Artifact` ( `id` INTEGER PRIMARY KEY AUTOINCREMENT, \
         `type_id` INT NOT NULL, `uri` TEXT, `state` INT, `name` VARCHAR(255), \
         `external_id` VARCHAR(255) UNIQUE, `create_time_since_epoch` INT NOT NULL DEFAULT 0, \
         `last_update_time_since_epoch` INT NOT NULL DEFAULT 0, UNIQUE(`type_id`, `name`) );",
    ),
    (
        "ArtifactProperty",
        "CREATE TABLE IF NOT EXISTS `ArtifactProperty` ( `artifact_id` INT NOT NULL, \
         `name` VARCHAR(255) NOT NULL, `is_custom_property` TINYINT(1) NOT NULL, \
         `int_value` INT, `double_value` DOUBLE, `string_value` TEXT, `byte_value` BLOB, \
         `proto_value` BLOB, `bool_value` BOOLEAN, \
         PRIMARY KEY (`artifact_id`, `name`, `is_custom_property`));",
    ),
    (
        "Execution",
        "CREATE TABLE IF NOT EXISTS `Execution` ( `id` INTEGER PRIMARY KEY AUTOINCREMENT, \
         `type_id` INT NOT NULL, `last_known_state` INT, `name` VARCHAR(255), \
         `external_id` VARCHAR(255) UNIQUE, `create_time_since_epoch` INT NOT NULL DEFAULT 0, \
         `last_update_time_since_epoch` INT NOT NULL DEFAULT 0, UNIQUE(`type_id`, `name`) );",
    ),
    (
        "ExecutionProperty",
        "CREATE TABLE IF NOT EXISTS `ExecutionProperty` ( `execution_id` INT NOT NULL, \
         `name` VARCHAR(255) NOT NULL, `is_custom_property` TINYINT(1) NOT NULL, \
         `int_value` INT, `double_value` DOUBLE, `string_value` TEXT, `byte_value` BLOB, \
         `proto_value` BLOB, `bool_value` BOOLEAN, \
         PRIMARY KEY (`execution_id`, `name`, `is_custom_property`));",
    ),
    (
        "Context",
        "CREATE TABLE IF NOT EXISTS `Context` ( `id` INTEGER PRIMARY KEY AUTOINCREMENT, \
         `type_id` INT NOT NULL, `name` VARCHAR(255) NOT NULL, \
         `external_id` VARCHAR(255) UNIQUE, `create_time_since_epoch` INT NOT NULL DEFAULT 0, \
         `last_update_time_since_epoch` INT NOT NULL DEFAULT 0, UNIQUE(`type_id`, `name`) );",
    ),
    (
        "ContextProperty",
        "CREATE TABLE IF NOT EXISTS `ContextProperty` ( `context_id` INT NOT NULL, \
         `name` VARCHAR(255) NOT NULL, `is_custom_property` TINYINT(1) NOT NULL, \
         `int_value` INT, `double_value` DOUBLE, `string_value` TEXT, `byte_value` BLOB, \
         `proto_value` BLOB, `bool_value` BOOLEAN, \
         PRIMARY KEY (`context_id`, `name`, `is_custom_property`));",
    ),
    (
        "ParentContext",
        "CREATE TABLE IF NOT EXISTS `ParentContext` ( `context_id` INT NOT NULL, \
         `parent_context_id` INT NOT NULL, PRIMARY KEY (`context_id`, `parent_context_id`));",
    ),
    (
        "Event",
        "CREATE TABLE IF NOT EXISTS `Event` ( `id` INTEGER PRIMARY KEY AUTOINCREMENT, \
         `artifact_id` INT NOT NULL, `execution_id` INT NOT NULL, `type` INT NOT NULL, \
         `milliseconds_since_epoch` INT, UNIQUE(`artifact_id`, `execution_id`, `type`) );",
    ),
    (
        "EventPath",
        "CREATE TABLE IF NOT EXISTS `EventPath` ( `event_id` INT NOT NULL, \
         `is_index_step` TINYINT(1) NOT NULL, `step_index` INT, `step_key` TEXT );",
    ),
    (
        "Association",
        "CREATE TABLE IF NOT EXISTS `Association` ( `id` INTEGER PRIMARY KEY AUTOINCREMENT, \
         `context_id` INT NOT NULL, `execution_id` INT NOT NULL, \
         UNIQUE(`context_id`, `execution_id`) );",
    ),
    (
        "Attribution",
        "CREATE TABLE IF NOT EXISTS `Attribution` ( `id` INTEGER PRIMARY KEY AUTOINCREMENT, \
         `context_id` INT NOT NULL, `artifact_id` INT NOT NULL, \
         UNIQUE(`context_id`, `artifact_id`) );",
    ),
    (
        "MLMDEnv",
        "CREATE TABLE IF NOT EXISTS `MLMDEnv` ( `schema_version` INTEGER PRIMARY KEY );",
    ),
];

/// MLMD's SQLite secondary indexes (the same names, so an MLMD-created file already has them).
/// Lookups of events by artifact use the `UNIQUE(artifact_id, execution_id, type)` index.
pub(crate) const INDEXES: [(&str, &str); 24] = [
    ("idx_artifact_uri", "`Artifact`(`uri`)"),
    (
        "idx_artifact_create_time_since_epoch",
        "`Artifact`(`create_time_since_epoch`)",
    ),
    (
        "idx_artifact_last_update_time_since_epoch",
        "`Artifact`(`last_update_time_since_epoch`)",
    ),
    ("idx_event_execution_id", "`Event`(`execution_id`)"),
    (
        "idx_parentcontext_parent_context_id",
        "`ParentContext`(`parent_context_id`)",
    ),
    ("idx_type_name", "`Type`(`name`)"),
    (
        "idx_execution_create_time_since_epoch",
        "`Execution`(`create_time_since_epoch`)",
    ),
    (
        "idx_execution_last_update_time_since_epoch",
        "`Execution`(`last_update_time_since_epoch`)",
    ),
    (
        "idx_context_create_time_since_epoch",
        "`Context`(`create_time_since_epoch`)",
    ),
    (
        "idx_context_last_update_time_since_epoch",
        "`Context`(`last_update_time_since_epoch`)",
    ),
    ("idx_eventpath_event_id", "`EventPath`(`event_id`)"),
    (
        "idx_artifact_property_int",
        "`ArtifactProperty`(`name`, `is_custom_property`, `int_value`) WHERE `int_value` IS NOT NULL",
    ),
    (
        "idx_artifact_property_double",
        "`ArtifactProperty`(`name`, `is_custom_property`, `double_value`) WHERE `double_value` IS NOT NULL",
    ),
    (
        "idx_artifact_property_string",
        "`ArtifactProperty`(`name`, `is_custom_property`, `string_value`) WHERE `string_value` IS NOT NULL",
    ),
    (
        "idx_execution_property_int",
        "`ExecutionProperty`(`name`, `is_custom_property`, `int_value`) WHERE `int_value` IS NOT NULL",
    ),
    (
        "idx_execution_property_double",
        "`ExecutionProperty`(`name`, `is_custom_property`, `double_value`) WHERE `double_value` IS NOT NULL",
    ),
    (
        "idx_execution_property_string",
        "`ExecutionProperty`(`name`, `is_custom_property`, `string_value`) WHERE `string_value` IS NOT NULL",
    ),
    (
        "idx_context_property_int",
        "`ContextProperty`(`name`, `is_custom_property`, `int_value`) WHERE `int_value` IS NOT NULL",
    ),
    (
        "idx_context_property_double",
        "`ContextProperty`(`name`, `is_custom_property`, `double_value`) WHERE `double_value` IS NOT NULL",
    ),
    (
        "idx_context_property_string",
        "`ContextProperty`(`name`, `is_custom_property`, `string_value`) WHERE `string_value` IS NOT NULL",
    ),
    ("idx_type_external_id", "`Type`(`external_id`)"),
    ("idx_artifact_external_id", "`Artifact`(`external_id`)"),
    ("idx_execution_external_id", "`Execution`(`external_id`)"),
    ("idx_context_external_id", "`Context`(`external_id`)"),
];

/// `Type.type_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Execution = 0,
    Artifact = 1,
    Context = 2,
}

/// `TypeProperty.data_type` (MLMD's `PropertyType` enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataType {
    Int = 1,
    Double = 2,
    String = 3,
    Boolean = 6,
}

/// A type this crate makes sure exists.
pub(crate) struct TypeDef {
    pub name: &'static str,
    pub kind: Kind,
    pub description: Option<&'static str>,
    pub props: &'static [(&'static str, DataType)],
    pub parent: Option<&'static str>,
}

const fn simple(name: &'static str, kind: Kind) -> TypeDef {
    TypeDef {
        name,
        kind,
        description: None,
        props: &[],
        parent: None,
    }
}

/// MLMD's nine built-in simple types; MLMD upserts them on every connect and a READONLY
/// connection fails if they are missing.
pub(crate) const SIMPLE_TYPES: [TypeDef; 9] = [
    simple("mlmd.Dataset", Kind::Artifact),
    simple("mlmd.Model", Kind::Artifact),
    simple("mlmd.Metrics", Kind::Artifact),
    simple("mlmd.Statistics", Kind::Artifact),
    simple("mlmd.Train", Kind::Execution),
    simple("mlmd.Transform", Kind::Execution),
    simple("mlmd.Process", Kind::Execution),
    simple("mlmd.Evaluate", Kind::Execution),
    simple("mlmd.Deploy", Kind::Execution),
];

use DataType::{Boolean, Double, Int, String as Str};

/// Evergreen's own types, in [`TypeIds`] order.
pub(crate) const EVERGREEN_TYPES: [TypeDef; 8] = [
    TypeDef {
        name: "evergreen.DataSpan",
        kind: Kind::Artifact,
        description: Some("One data span (a batch of raw records) consumed by training"),
        props: &[("span", Str), ("records", Int), ("bad_records", Int)],
        parent: Some("mlmd.Dataset"),
    },
    TypeDef {
        name: "evergreen.Model",
        kind: Kind::Artifact,
        description: Some("One published model version"),
        props: &[("model_name", Str), ("version", Int)],
        parent: Some("mlmd.Model"),
    },
    TypeDef {
        name: "evergreen.Metrics",
        kind: Kind::Artifact,
        description: Some("Quality metrics of a model on a span"),
        props: &[
            ("examples", Int),
            ("logloss", Double),
            ("auc", Double),
            ("accuracy", Double),
            ("calibration", Double),
        ],
        parent: Some("mlmd.Metrics"),
    },
    TypeDef {
        name: "evergreen.Train",
        kind: Kind::Execution,
        description: Some("Fine-tuning of a model on one span"),
        props: &[
            ("hyperparameters", Str),
            ("code_version", Str),
            ("span", Str),
        ],
        parent: Some("mlmd.Train"),
    },
    TypeDef {
        name: "evergreen.Evaluate",
        kind: Kind::Execution,
        description: Some("Quality gate run on a candidate"),
        props: &[("passed", Boolean), ("checks", Str), ("summary", Str)],
        parent: Some("mlmd.Evaluate"),
    },
    TypeDef {
        name: "evergreen.Publish",
        kind: Kind::Execution,
        description: Some("Publication of a candidate as a numbered model version"),
        props: &[("model_name", Str), ("version", Int)],
        parent: Some("mlmd.Deploy"),
    },
    TypeDef {
        name: "evergreen.AdminAction",
        kind: Kind::Execution,
        description: Some("Operator action (rollback, pin, ...)"),
        props: &[
            ("action", Str),
            ("actor", Str),
            ("reason", Str),
            ("details", Str),
        ],
        parent: Some("mlmd.Process"),
    },
    TypeDef {
        name: "evergreen.Pipeline",
        kind: Kind::Context,
        description: Some("All lineage of one model name"),
        props: &[("model_name", Str)],
        parent: None,
    },
];

/// Ids of Evergreen's types in this database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TypeIds {
    pub data_span: i64,
    pub model: i64,
    pub metrics: i64,
    pub train: i64,
    pub evaluate: i64,
    pub publish: i64,
    pub admin: i64,
    pub pipeline: i64,
}

/// What [`inspect`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// No tables at all: a new file.
    Fresh,
    /// A schema-v10 MLMD database; `complete` when nothing needs to be written.
    V10 { complete: bool },
    /// Tables but no `MLMDEnv`.
    NotMlmd(Vec<String>),
    /// `MLMDEnv` with a row count other than one.
    BadEnv(usize),
    /// Another schema version.
    Version(i64),
    /// A v10 database missing one of the tables.
    MissingTable(&'static str),
}

/// Looks at the database without writing anything.
pub(crate) fn inspect(conn: &Connection) -> Result<State, Fault> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if tables.is_empty() {
        return Ok(State::Fresh);
    }
    if !tables.iter().any(|t| t == "MLMDEnv") {
        return Ok(State::NotMlmd(tables));
    }
    let versions: Vec<i64> = conn
        .prepare("SELECT `schema_version` FROM `MLMDEnv`")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    match versions.as_slice() {
        [SCHEMA_VERSION] => {}
        [v] => return Ok(State::Version(*v)),
        other => return Ok(State::BadEnv(other.len())),
    }
    if let Some((t, _)) = TABLES.iter().find(|(t, _)| !tables.iter().any(|x| x == t)) {
        return Ok(State::MissingTable(t));
    }
    let indexes: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name LIKE 'idx_%'",
        [],
        |r| r.get(0),
    )?;
    let complete = usize::try_from(indexes).is_ok_and(|n| n >= INDEXES.len())
        && INDEXES
            .iter()
            .all(|(name, _)| index_exists(conn, name).unwrap_or(false))
        && type_ids(conn, false)?.is_some();
    Ok(State::V10 { complete })
}

fn index_exists(conn: &Connection, name: &str) -> Result<bool, Fault> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1",
            params![name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Creates MLMD's tables and the `MLMDEnv` row (call inside a transaction on a fresh file).
pub(crate) fn create_tables(conn: &Connection) -> Result<(), Fault> {
    for (_, ddl) in TABLES {
        conn.execute_batch(ddl)?;
    }
    conn.execute(
        "INSERT INTO `MLMDEnv`(`schema_version`) VALUES (?1)",
        params![SCHEMA_VERSION],
    )?;
    Ok(())
}

/// Creates any missing secondary index.
pub(crate) fn create_indexes(conn: &Connection) -> Result<(), Fault> {
    for (name, on) in INDEXES {
        conn.execute_batch(&format!("CREATE INDEX IF NOT EXISTS `{name}` ON {on};"))?;
    }
    Ok(())
}

/// Finds (and with `write`, creates or completes) MLMD's simple types and Evergreen's types.
/// Without `write`, returns `None` as soon as anything is missing.
pub(crate) fn type_ids(conn: &Connection, write: bool) -> Result<Option<TypeIds>, Fault> {
    for def in &SIMPLE_TYPES {
        if ensure_type(conn, def, write)?.is_none() {
            return Ok(None);
        }
    }
    let mut ids = [0i64; 8];
    for (slot, def) in ids.iter_mut().zip(&EVERGREEN_TYPES) {
        match ensure_type(conn, def, write)? {
            Some(id) => *slot = id,
            None => return Ok(None),
        }
    }
    let [
        data_span,
        model,
        metrics,
        train,
        evaluate,
        publish,
        admin,
        pipeline,
    ] = ids;
    Ok(Some(TypeIds {
        data_span,
        model,
        metrics,
        train,
        evaluate,
        publish,
        admin,
        pipeline,
    }))
}

/// Looks a type up the way MLMD does (`name`, `version IS NULL`, `type_kind`).
fn find_type(conn: &Connection, name: &str, kind: Kind) -> Result<Option<i64>, Fault> {
    Ok(conn
        .prepare_cached(
            "SELECT `id` FROM `Type` WHERE `name` = ?1 AND `version` IS NULL AND `type_kind` = ?2 \
             ORDER BY `id` LIMIT 1",
        )?
        .query_row(params![name, kind as i64], |r| r.get(0))
        .optional()?)
}

fn ensure_type(conn: &Connection, def: &TypeDef, write: bool) -> Result<Option<i64>, Fault> {
    let id = match find_type(conn, def.name, def.kind)? {
        Some(id) => id,
        None if write => {
            conn.execute(
                "INSERT INTO `Type`(`name`, `type_kind`, `version`, `description`, `external_id`) \
                 VALUES (?1, ?2, NULL, ?3, NULL)",
                params![def.name, def.kind as i64, def.description],
            )?;
            conn.last_insert_rowid()
        }
        None => return Ok(None),
    };
    for (prop, data_type) in def.props {
        let exists = conn
            .prepare_cached("SELECT 1 FROM `TypeProperty` WHERE `type_id` = ?1 AND `name` = ?2")?
            .query_row(params![id, prop], |_| Ok(()))
            .optional()?
            .is_some();
        if !exists {
            if !write {
                return Ok(None);
            }
            conn.execute(
                "INSERT INTO `TypeProperty`(`type_id`, `name`, `data_type`) VALUES (?1, ?2, ?3)",
                params![id, prop, *data_type as i64],
            )?;
        }
    }
    if let Some(parent) = def.parent {
        let has_parent = conn
            .prepare_cached("SELECT 1 FROM `ParentType` WHERE `type_id` = ?1 LIMIT 1")?
            .query_row(params![id], |_| Ok(()))
            .optional()?
            .is_some();
        if !has_parent {
            if !write {
                return Ok(None);
            }
            let parent_id = find_type(conn, parent, def.kind)?.ok_or_else(|| {
                Fault::Inconsistent(format!("base type {parent} of {} is missing", def.name))
            })?;
            conn.execute(
                "INSERT INTO `ParentType`(`type_id`, `parent_type_id`) VALUES (?1, ?2)",
                params![id, parent_id],
            )?;
        }
    }
    Ok(Some(id))
}

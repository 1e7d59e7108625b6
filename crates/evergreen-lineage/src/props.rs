//! MLMD property rows (`ArtifactProperty`, `ExecutionProperty`, `ContextProperty`): each row fills
//! exactly one value column, and NaN is stored as "no row" because MLMD refuses all-NULL rows.

use std::collections::HashMap;

use rusqlite::{Connection, params, types::Value};

use crate::error::Fault;

/// Which kind of MLMD node a property belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node {
    Artifact,
    Execution,
    Context,
}

impl Node {
    fn table(self) -> &'static str {
        match self {
            Node::Artifact => "ArtifactProperty",
            Node::Execution => "ExecutionProperty",
            Node::Context => "ContextProperty",
        }
    }

    fn id_column(self) -> &'static str {
        match self {
            Node::Artifact => "artifact_id",
            Node::Execution => "execution_id",
            Node::Context => "context_id",
        }
    }
}

/// One property value (the subset of MLMD's `Value` that Evergreen writes).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Int(i64),
    Double(f64),
    Str(String),
    Bool(bool),
}

impl Val {
    pub(crate) fn str(s: &str) -> Val {
        Val::Str(s.to_string())
    }
}

/// Converts an unsigned count to MLMD's signed INT column.
pub(crate) fn to_i64(field: &str, value: u64) -> Result<i64, Fault> {
    i64::try_from(value).map_err(|_| Fault::OutOfRange {
        field: field.to_string(),
        value,
    })
}

/// Sets (replaces) or, with `None` or a NaN double, removes property `name` of node `id`.
pub(crate) fn set_prop(
    conn: &Connection,
    node: Node,
    id: i64,
    name: &str,
    custom: bool,
    value: Option<Val>,
) -> Result<(), Fault> {
    let (table, col) = (node.table(), node.id_column());
    conn.prepare_cached(&format!(
        "DELETE FROM `{table}` WHERE `{col}` = ?1 AND `name` = ?2"
    ))?
    .execute(params![id, name])?;
    let value = match value {
        Some(Val::Double(d)) if d.is_nan() => None,
        v => v,
    };
    let Some(value) = value else {
        return Ok(());
    };
    let (mut int, mut double, mut string, mut boolean) = (None, None, None, None);
    match value {
        Val::Int(i) => int = Some(i),
        Val::Double(d) => double = Some(d),
        Val::Str(s) => string = Some(s),
        Val::Bool(b) => boolean = Some(b),
    }
    conn.prepare_cached(&format!(
        "INSERT INTO `{table}` (`{col}`, `name`, `is_custom_property`, `int_value`, \
         `double_value`, `string_value`, `bool_value`) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))?
    .execute(params![id, name, custom, int, double, string, boolean])?;
    Ok(())
}

/// All properties (declared and custom alike) of node `id`, by name.
pub(crate) fn get_props(conn: &Connection, node: Node, id: i64) -> Result<Props, Fault> {
    let (table, col) = (node.table(), node.id_column());
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT `name`, `int_value`, `double_value`, `string_value`, `bool_value` \
         FROM `{table}` WHERE `{col}` = ?1 ORDER BY `is_custom_property`"
    ))?;
    let mut rows = stmt.query(params![id])?;
    let mut out = HashMap::new();
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        // Same precedence as MLMD's reader: int, double, string, then bool.
        let int: Value = row.get(1)?;
        let double: Value = row.get(2)?;
        let string: Value = row.get(3)?;
        let boolean: Value = row.get(4)?;
        let v = match (int, double, string, boolean) {
            (Value::Integer(i), ..) => Val::Int(i),
            (Value::Real(r), ..) => Val::Int(r as i64),
            (_, Value::Real(r), ..) => Val::Double(r),
            (_, Value::Integer(i), ..) => Val::Double(i as f64),
            (_, _, Value::Text(s), _) => Val::Str(s),
            (_, _, _, Value::Integer(i)) => Val::Bool(i != 0),
            (_, _, _, Value::Text(s)) => Val::Bool(matches!(s.as_str(), "1" | "true" | "TRUE")),
            // byte/proto values or all-NULL rows: not something Evergreen writes; skip.
            _ => continue,
        };
        // A declared property wins over a custom one of the same name (declared sort first).
        out.entry(name).or_insert(v);
    }
    Ok(Props(out))
}

/// Properties of one node, with lenient typed accessors.
#[derive(Debug, Default)]
pub(crate) struct Props(HashMap<String, Val>);

impl Props {
    pub(crate) fn string(&self, name: &str) -> Option<String> {
        match self.0.get(name)? {
            Val::Str(s) => Some(s.clone()),
            Val::Int(i) => Some(i.to_string()),
            Val::Double(d) => Some(d.to_string()),
            Val::Bool(b) => Some(b.to_string()),
        }
    }

    pub(crate) fn string_or_empty(&self, name: &str) -> String {
        self.string(name).unwrap_or_default()
    }

    /// A non-negative integer; `Err` names the property if it is negative or not a number.
    pub(crate) fn u64(&self, name: &str) -> Result<Option<u64>, Fault> {
        let bad = |what: String| Fault::Inconsistent(format!("property {name} {what}"));
        match self.0.get(name) {
            None => Ok(None),
            Some(Val::Int(i)) => u64::try_from(*i)
                .map(Some)
                .map_err(|_| bad(format!("is negative ({i})"))),
            Some(Val::Str(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| bad(format!("is not an unsigned integer ({s:?})"))),
            Some(other) => Err(bad(format!("has unexpected value {other:?}"))),
        }
    }

    /// A double; missing reads as NaN (that is how NaN is stored).
    pub(crate) fn f64(&self, name: &str) -> f64 {
        match self.0.get(name) {
            Some(Val::Double(d)) => *d,
            Some(Val::Int(i)) => *i as f64,
            Some(Val::Str(s)) => s.trim().parse().unwrap_or(f64::NAN),
            _ => f64::NAN,
        }
    }

    /// A boolean stored as BOOLEAN, INT or string.
    pub(crate) fn bool(&self, name: &str) -> Option<bool> {
        match self.0.get(name)? {
            Val::Bool(b) => Some(*b),
            Val::Int(i) => Some(*i != 0),
            Val::Double(d) => Some(*d != 0.0),
            Val::Str(s) => Some(matches!(s.trim(), "1" | "true" | "TRUE" | "True")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let c = Connection::open_in_memory().expect("memory db");
        for (_, ddl) in crate::schema::TABLES {
            c.execute_batch(ddl).expect("ddl");
        }
        c
    }

    #[test]
    fn one_value_column_per_row_and_nan_means_no_row() {
        let c = conn();
        set_prop(&c, Node::Artifact, 1, "i", false, Some(Val::Int(-3))).expect("int");
        set_prop(&c, Node::Artifact, 1, "d", false, Some(Val::Double(0.25))).expect("double");
        set_prop(&c, Node::Artifact, 1, "s", true, Some(Val::str("x"))).expect("string");
        set_prop(&c, Node::Artifact, 1, "b", false, Some(Val::Bool(true))).expect("bool");
        set_prop(
            &c,
            Node::Artifact,
            1,
            "nan",
            false,
            Some(Val::Double(f64::NAN)),
        )
        .expect("nan");
        // Replacing a custom property by a declared one of the same name leaves one row.
        set_prop(&c, Node::Artifact, 1, "s", false, Some(Val::str("y"))).expect("replace");
        let rows: i64 = c
            .query_row("SELECT count(*) FROM ArtifactProperty", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 4);
        let p = get_props(&c, Node::Artifact, 1).expect("props");
        assert_eq!(p.u64("i").map_err(|_| ()), Err(()), "negative is not a u64");
        assert_eq!(p.f64("d"), 0.25);
        assert_eq!(p.string("s").as_deref(), Some("y"));
        assert_eq!(p.bool("b"), Some(true));
        assert!(p.f64("nan").is_nan());
        assert!(p.f64("missing").is_nan());
        set_prop(&c, Node::Artifact, 1, "b", false, None).expect("remove");
        assert_eq!(
            get_props(&c, Node::Artifact, 1).expect("props").bool("b"),
            None
        );
    }

    #[test]
    fn booleans_written_by_other_tools_as_int_are_read() {
        let c = conn();
        set_prop(&c, Node::Execution, 7, "passed", false, Some(Val::Int(1))).expect("int");
        set_prop(&c, Node::Execution, 8, "passed", false, Some(Val::Int(0))).expect("int");
        assert_eq!(
            get_props(&c, Node::Execution, 7).expect("p").bool("passed"),
            Some(true)
        );
        assert_eq!(
            get_props(&c, Node::Execution, 8).expect("p").bool("passed"),
            Some(false)
        );
    }

    #[test]
    fn out_of_range_counts_are_reported() {
        assert!(matches!(
            to_i64("records", u64::MAX),
            Err(Fault::OutOfRange { .. })
        ));
        assert_eq!(to_i64("records", 5).ok(), Some(5));
    }
}

//! TFRecord framing (reader and writer) and tf.train.Example decoding. Placeholder: the reader
//! is being written; until then opening a TFRecord span is a clear error.

use crate::DataError;
use crate::reader::RowSource;
use std::fs::File;
use std::path::Path;

/// Opens a TFRecord span (plain or gzip) as a row source.
pub(crate) fn open_rows(_file: File, path: &Path) -> Result<Box<dyn RowSource>, DataError> {
    Err(DataError::Unsupported {
        path: path.to_path_buf(),
        format: "tfrecord",
    })
}

//! Sparse text formats: Vowpal Wabbit, LibSVM and LibFFM. Placeholder: the readers are being
//! written; until then opening such a span is a clear error.

use crate::DataError;
use crate::reader::RowSource;
use std::fs::File;
use std::path::Path;

fn unsupported(path: &Path, format: &'static str) -> DataError {
    DataError::Unsupported {
        path: path.to_path_buf(),
        format,
    }
}

/// Opens a Vowpal Wabbit text span.
pub(crate) fn open_vw(_file: File, path: &Path) -> Result<Box<dyn RowSource>, DataError> {
    Err(unsupported(path, "vw"))
}

/// Opens a LibSVM text span.
pub(crate) fn open_libsvm(_file: File, path: &Path) -> Result<Box<dyn RowSource>, DataError> {
    Err(unsupported(path, "libsvm"))
}

/// Opens a LibFFM text span.
pub(crate) fn open_libffm(_file: File, path: &Path) -> Result<Box<dyn RowSource>, DataError> {
    Err(unsupported(path, "libffm"))
}

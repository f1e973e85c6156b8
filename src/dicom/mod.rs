//! DICOM in and out: header scan, series grouping/splitting, geometry (LPS↔RAS, slice order, spacing checks),
//! pixel decoding to f32, and (later) secondary-capture writing and C-STORE.

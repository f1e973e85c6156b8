//! One f32 matrix product on raw strided operands through the `gemm` crate, with each operand's pointer and
//! strides named together, for the convolution kernels that multiply windows of larger buffers in place.

/// A matrix operand: element (i, j) sits at `ptr + i·row + j·col`.
#[derive(Clone, Copy)]
pub(super) struct Strided<P> {
    pub ptr: P,
    pub row: isize,
    pub col: isize,
}

impl<P> Strided<P> {
    /// Row-major with `stride` elements between rows.
    pub fn rows(ptr: P, stride: usize) -> Self {
        Strided { ptr, row: stride as isize, col: 1 }
    }

    /// The transpose of a row-major matrix with `stride` elements between its rows.
    pub fn transposed(ptr: P, stride: usize) -> Self {
        Strided { ptr, row: 1, col: stride as isize }
    }
}

/// `dst [m, n] (+)= lhs [m, k] · rhs [k, n]`: added onto `dst` when `accumulate`, else written over it.
///
/// # Safety
/// Every element the three operands address for these sizes must lie inside a live allocation, `dst` must be
/// writable and overlap neither input, and no other thread may touch `dst`'s elements meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: Strided<*mut f32>,
    accumulate: bool,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    parallelism: gemm::Parallelism,
) {
    let alpha = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: the caller's contract above is gemm's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col,
            dst.row,
            accumulate,
            lhs.ptr,
            lhs.col,
            lhs.row,
            rhs.ptr,
            rhs.col,
            rhs.row,
            alpha,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

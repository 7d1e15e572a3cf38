//! The optimizer's fused CUDA kernels (`kernels.cu`, committed as `kernels.ptx`), as candle custom
//! ops. candle runs every tensor operation as its own kernel with its own allocation and
//! bookkeeping (measured on an H100: 15 to 30 µs each), so the composed AdamW update (a dozen
//! operations per parameter) and gradient norm (four per parameter) cost more than the
//! transformer's backward pass on a small model. Here the update is two kernels per parameter and
//! the norm one, doing the same f32 operations in the same order as the CPU's fused pass.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{
    bail, CpuStorage, CudaStorage, CustomOp1, CustomOp3, DType, InplaceOp2, Layout, Result, Shape,
    Tensor,
};

use super::UpdateScalars;

const PTX: &str = include_str!("kernels.ptx");
const MODULE: &str = "chatforge_optim";

/// Threads per block of `sum_squares_f32` (its shared-memory tree is sized for it).
const NORM_THREADS: u32 = 256;
/// At most this many blocks, i.e. partial sums, per tensor.
const NORM_BLOCKS: usize = 64;

fn f32_slice<'a>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> Result<candle_core::cuda_backend::cudarc::driver::CudaView<'a, f32>> {
    let CudaStorageSlice::F32(slice) = &s.slice else {
        bail!("adamw (cuda): {what} must be f32")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(slice.slice(a..b)),
        None => bail!("adamw (cuda): {what} must be contiguous"),
    }
}

/// `(g, m, v) → [m'; v']` as one `(2, N)` tensor.
struct Moments {
    b1: f32,
    b2: f32,
}

impl CustomOp3 for Moments {
    fn name(&self) -> &'static str {
        "adamw-moments"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        bail!("adamw-moments is a CUDA kernel; CPU parameters take the fused host pass")
    }

    fn cuda_fwd(
        &self,
        g: &CudaStorage,
        gl: &Layout,
        m: &CudaStorage,
        ml: &Layout,
        v: &CudaStorage,
        vl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let n = gl.shape().elem_count();
        if ml.shape().elem_count() != n || vl.shape().elem_count() != n {
            bail!("adamw-moments: gradient and moments differ in size")
        }
        let dev = g.device();
        let (g, m, v) = (
            f32_slice(g, gl, "the gradient")?,
            f32_slice(m, ml, "m")?,
            f32_slice(v, vl, "v")?,
        );
        // SAFETY: every element is written by the kernel below.
        let out = unsafe { dev.alloc::<f32>(2 * n)? };
        let func = dev.get_or_load_custom_func("adamw_moments_f32", MODULE, PTX)?;
        let mut b = func.builder();
        let n64 = n as u64;
        b.arg(&g).arg(&m).arg(&v).arg(&out).arg(&n64);
        b.arg(&self.b1).arg(&self.b2);
        // SAFETY: the argument list matches the kernel's signature; `out` holds 2n floats.
        unsafe { b.launch(LaunchConfig::for_num_elems(n.max(1) as u32)) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from((2, n)),
        ))
    }
}

/// `p ← p·decay − step · m' / (√v' / √(1 − β2ᵗ) + ε)`, in place on the parameter.
struct Apply(UpdateScalars);

impl InplaceOp2 for Apply {
    fn name(&self) -> &'static str {
        "adamw-apply"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<()> {
        bail!("adamw-apply is a CUDA kernel; CPU parameters take the fused host pass")
    }

    fn cuda_fwd(
        &self,
        p: &mut CudaStorage,
        pl: &Layout,
        mv: &CudaStorage,
        mvl: &Layout,
    ) -> Result<()> {
        let n = pl.shape().elem_count();
        if mvl.shape().elem_count() != 2 * n {
            bail!(
                "adamw-apply: moments of {} elements for {n}",
                mvl.shape().elem_count()
            )
        }
        let dev = p.device().clone();
        let mv = f32_slice(mv, mvl, "the moments")?;
        let CudaStorageSlice::F32(p) = &mut p.slice else {
            bail!("adamw (cuda): parameters must be f32")
        };
        let Some((a, b)) = pl.contiguous_offsets() else {
            bail!("adamw (cuda): parameter is not contiguous")
        };
        let mut p = p.slice_mut(a..b);
        let s = &self.0;
        let func = dev.get_or_load_custom_func("adamw_apply_f32", MODULE, PTX)?;
        let mut builder = func.builder();
        let n64 = n as u64;
        builder.arg(&mut p).arg(&mv).arg(&n64);
        builder
            .arg(&s.decay)
            .arg(&s.step_size)
            .arg(&s.eps)
            .arg(&s.bc2_sqrt);
        // SAFETY: the argument list matches the kernel's signature; `mv` holds 2n floats.
        unsafe { builder.launch(LaunchConfig::for_num_elems(n.max(1) as u32)) }.w()?;
        Ok(())
    }
}

/// One parameter's AdamW update on its CUDA device: returns the new `(m, v)`, views into one
/// `(2, N)` buffer, shaped like `p`; `p` is updated in place.
pub(super) fn adamw(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    s: UpdateScalars,
) -> Result<(Tensor, Tensor)> {
    let (g, m, v) = (g.contiguous()?, m.contiguous()?, v.contiguous()?);
    let mv = g.apply_op3_no_bwd(&m, &v, &Moments { b1: s.b1, b2: s.b2 })?; // (2, N)
    p.inplace_op2(&mv, &Apply(s))?;
    let shape = p.shape();
    Ok((mv.get(0)?.reshape(shape)?, mv.get(1)?.reshape(shape)?))
}

/// Partial sums of squares of an f32 CUDA tensor, in f64 (their sum is `‖x‖²`).
struct SumSquares;

impl CustomOp1 for SumSquares {
    fn name(&self) -> &'static str {
        "sum-squares"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        bail!("sum-squares is a CUDA kernel")
    }

    fn cuda_fwd(&self, x: &CudaStorage, xl: &Layout) -> Result<(CudaStorage, Shape)> {
        let n = xl.shape().elem_count();
        let blocks = n.div_ceil(NORM_THREADS as usize).clamp(1, NORM_BLOCKS);
        let dev = x.device();
        let x = f32_slice(x, xl, "the gradient")?;
        // SAFETY: each of the `blocks` blocks writes its own element.
        let out = unsafe { dev.alloc::<f64>(blocks)? };
        let func = dev.get_or_load_custom_func("sum_squares_f32", MODULE, PTX)?;
        let mut b = func.builder();
        let n64 = n as u64;
        b.arg(&x).arg(&n64).arg(&out);
        let cfg = LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (NORM_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the argument list matches the kernel's signature; 256 threads per block.
        unsafe { b.launch(cfg) }.w()?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            Shape::from(blocks),
        ))
    }
}

/// `Σ x²` over all `tensors` (f32, on one CUDA device), accumulated in f64: one kernel per
/// tensor writes fixed partial sums, one copy brings them all back, and the host adds them in
/// order, so the result is deterministic.
pub(super) fn sum_squares(tensors: &[&Tensor]) -> Result<f64> {
    let mut partials = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.dtype() != DType::F32 {
            bail!("sum-squares: gradients must be f32, got {:?}", t.dtype())
        }
        partials.push(t.contiguous()?.apply_op1_no_bwd(&SumSquares)?);
    }
    if partials.is_empty() {
        return Ok(0.0);
    }
    let all = Tensor::cat(&partials, 0)?.to_vec1::<f64>()?;
    Ok(all.iter().sum())
}

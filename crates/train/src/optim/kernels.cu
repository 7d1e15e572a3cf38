// Fused CUDA kernels of the optimizer (crates/train/src/optim/cuda.rs), compiled to the committed
// `kernels.ptx` by `scripts/build-cuda.sh --ptx` (nvcc 13.0 from PyPI, `-arch=compute_75
// -fmad=false`). The driver JIT-compiles the PTX for the GPU it runs on.
//
// `-fmad=false` keeps every product and sum separately rounded, in the order written: the same
// f32 operations as the host's fused AdamW pass (`AdamWUpdate::apply` in optim.rs), so that the
// GPU update of given gradients and moments is the CPU's bit for bit.

// New moments of one parameter: out[0..n] = m', out[n..2n] = v' with
//   m' = m + (g - m)·(1 - β1),   v' = v·β2 + ((1 - β2)·g)·g.
extern "C" __global__ void adamw_moments_f32(const float* g, const float* m, const float* v,
                                             float* out, unsigned long long n, float b1,
                                             float b2) {
    const float c1 = 1.0f - b1;
    const float c2 = 1.0f - b2;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)blockDim.x * gridDim.x) {
        const float gi = g[i];
        const float mi = m[i];
        out[i] = mi + (gi - mi) * c1;
        out[n + i] = v[i] * b2 + c2 * gi * gi;
    }
}

// The parameter step from the new moments `mv` (m' then v'):
//   p ← p·decay;  p ← p − step · (m' / (√v' / √(1 − β2ᵗ) + ε)).
extern "C" __global__ void adamw_apply_f32(float* p, const float* mv, unsigned long long n,
                                           float decay, float step_size, float eps,
                                           float bc2_sqrt) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)blockDim.x * gridDim.x) {
        float pi = p[i] * decay;
        const float denom = sqrtf(mv[n + i]) / bc2_sqrt + eps;
        pi -= step_size * (mv[i] / denom);
        p[i] = pi;
    }
}

// Partial sums of squares in f64: block b of a fixed grid writes out[b], the sum over the
// elements i ≡ thread (mod grid · block) it visits, reduced in a fixed tree. With a fixed grid the
// result does not depend on timing. Needs blockDim.x == 256.
extern "C" __global__ void sum_squares_f32(const float* x, unsigned long long n, double* out) {
    __shared__ double s[256];
    double acc = 0.0;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)blockDim.x * gridDim.x) {
        const double xi = (double)x[i];
        acc += xi * xi;
    }
    s[threadIdx.x] = acc;
    __syncthreads();
    for (unsigned int k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) {
            s[threadIdx.x] += s[threadIdx.x + k];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        out[blockIdx.x] = s[0];
    }
}

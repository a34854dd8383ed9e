// Fused CPU kernels of the nested quantizer (lqs/fused.py builds and loads this file).
//
// Each kernel does in one pass over the parameter what TensorFlow does in several, with the
// same IEEE-754 operation per element: division, floor, multiplication, absolute value,
// comparison and subtraction are each exactly rounded (or exact), so neither vectorization nor
// evaluation order changes a bit; lqs/fused.py compiles with -ffp-contract=off (no FMA). NaN
// handling follows TensorFlow's kernels: tf.maximum, tf.nn.relu and tf.reduce_max propagate NaN.

#include <cmath>
#include <cstdint>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;

// max that keeps a NaN from either side, as tf.reduce_max does
inline float nan_max(float a, float b) { return (b > a || b != b) ? b : a; }

// A (rows x width) block: y = floor(x / s) * s with one scale per column, and per column
// m = max(m, |floor(x / s)|). Written as one flat loop so that the compiler vectorizes it.
void quantize_block(const float* __restrict x, float* __restrict y,
                    const float* __restrict s, float* __restrict m,
                    int64_t rows, int64_t width) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* __restrict xr = x + r * width;
    float* __restrict yr = y + r * width;
    for (int64_t k = 0; k < width; ++k) {
      const float q = std::floor(xr[k] / s[k]);  // tf.math.floordiv
      yr[k] = q * s[k];
      m[k] = nan_max(m[k], std::fabs(q));
    }
  }
}

// Groups of B consecutive elements sharing one scale: the block loop runs over lanes of the
// same scale, and the lanes' maxima are merged at the end.
void quantize_runs(const float* x, float* y, float scale, float* m, int64_t n) {
  constexpr int kLanes = 16;
  float s[kLanes], lanes[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    s[l] = scale;
    lanes[l] = *m;
  }
  const int64_t rows = n / kLanes;
  quantize_block(x, y, s, lanes, rows, kLanes);
  quantize_block(x + rows * kLanes, y + rows * kLanes, s, lanes, 1, n - rows * kLanes);
  for (int l = 0; l < kLanes; ++l) *m = nan_max(*m, lanes[l]);
}

}  // namespace

// p is viewed as (A, K, B): K scale groups along the middle axis (K = 1 for one scale).
REGISTER_OP("LqsNestedForward")
    .Input("p: float")
    .Input("scale: float")
    .Output("p_rec: float")
    .Output("max_abs_q: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      return absl::OkStatus();
    });

class LqsNestedForwardOp : public OpKernel {
 public:
  explicit LqsNestedForwardOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& p = ctx->input(0);
    const Tensor& scale = ctx->input(1);
    OP_REQUIRES(ctx, p.dims() == 3 && scale.dims() == 1 && scale.dim_size(0) == p.dim_size(1),
                absl::InvalidArgumentError("LqsNestedForward: p must be (A, K, B), scale (K,)"));
    const int64_t A = p.dim_size(0), K = p.dim_size(1), B = p.dim_size(2);
    Tensor* p_rec = nullptr;
    Tensor* max_abs_q = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, p.shape(), &p_rec));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, scale.shape(), &max_abs_q));
    const float* x = p.flat<float>().data();
    const float* s = scale.flat<float>().data();
    float* y = p_rec->flat<float>().data();
    float* m = max_abs_q->flat<float>().data();
    for (int64_t k = 0; k < K; ++k) m[k] = 0.0f;
    if (B == 1) {
      quantize_block(x, y, s, m, A, K);
      return;
    }
    for (int64_t a = 0; a < A; ++a) {
      for (int64_t k = 0; k < K; ++k) {
        const int64_t offset = (a * K + k) * B;
        quantize_runs(x + offset, y + offset, s[k], m + k, B);
      }
    }
  }
};

REGISTER_KERNEL_BUILDER(Name("LqsNestedForward").Device(tensorflow::DEVICE_CPU),
                        LqsNestedForwardOp);

// vote = relu(threshold - |upstream| / max(|p_rec|, eps)), element-wise.
REGISTER_OP("LqsThresholdVote")
    .Input("upstream: float")
    .Input("p_rec: float")
    .Attr("threshold: float")
    .Attr("eps: float")
    .Output("vote: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

class LqsThresholdVoteOp : public OpKernel {
 public:
  explicit LqsThresholdVoteOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("threshold", &threshold_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("eps", &eps_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& upstream = ctx->input(0);
    const Tensor& p_rec = ctx->input(1);
    OP_REQUIRES(ctx, upstream.shape() == p_rec.shape(),
                absl::InvalidArgumentError("LqsThresholdVote: upstream and p_rec differ in shape"));
    Tensor* vote = nullptr;
    OP_REQUIRES_OK(ctx, ctx->forward_input_or_allocate_output({0}, 0, upstream.shape(), &vote));
    // the vote may reuse the upstream buffer (forwarded input): no __restrict here
    const float* g = upstream.flat<float>().data();
    const float* r = p_rec.flat<float>().data();
    float* v = vote->flat<float>().data();
    const float lam = threshold_, eps = eps_;
    const int64_t n = upstream.NumElements();
    for (int64_t i = 0; i < n; ++i) {
      const float a = std::fabs(r[i]);
      const float denominator = (a < eps) ? eps : a;  // tf.maximum (a NaN stays)
      const float x = lam - std::fabs(g[i]) / denominator;
      v[i] = (x < 0.0f) ? 0.0f : x;  // tf.nn.relu (a NaN stays)
    }
  }

 private:
  float threshold_;
  float eps_;
};

REGISTER_KERNEL_BUILDER(Name("LqsThresholdVote").Device(tensorflow::DEVICE_CPU),
                        LqsThresholdVoteOp);

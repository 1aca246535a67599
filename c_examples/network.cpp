// A small C++17 RAII wrapper over the C ABI, building a network in code:
// conv → BatchNorm → ReLU → residual block → global average pooling → dense.
//
//   c++ -std=c++17 -Wall -Wextra -Werror -Iinclude c_examples/network.cpp
//       -Ltarget/release -llipschitz -Wl,-rpath,target/release -o network   (one line)
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "lipschitz.h"

namespace lip {

struct Error : std::runtime_error {
    int32_t status;
    Error(int32_t s, const char *what) : std::runtime_error(what), status(s) {}
};

inline void check(int32_t status) {
    if (status != LIP_OK) throw Error(status, lip_last_error());
}

class Network {
  public:
    explicit Network(std::vector<int64_t> input_shape)
        : net_(lip_network_new(input_shape.data(), input_shape.size()), &lip_network_free) {
        if (!net_) throw Error(LIP_ERR_INVALID_ARGUMENT, lip_last_error());
    }
    static Network from_onnx(const std::string &path) { return Network(lip_network_from_onnx(path.c_str(), nullptr, 0)); }

    Network &conv(const std::vector<float> &w, const LipConv2d &c) { check(lip_network_add_conv2d(net_.get(), w.data(), &c, nullptr)); return *this; }
    Network &dense(const std::vector<float> &w, size_t rows, size_t cols) { check(lip_network_add_dense(net_.get(), w.data(), rows, cols, nullptr)); return *this; }
    Network &batch_norm(const std::vector<float> &g, const std::vector<float> &b, const std::vector<float> &m, const std::vector<float> &v) {
        check(lip_network_add_batch_norm(net_.get(), g.data(), b.data(), m.data(), v.data(), g.size(), 1e-5));
        return *this;
    }
    Network &relu() { check(lip_network_add_activation(net_.get(), LIP_ACT_RELU, 0.0)); return *this; }
    Network &global_avg_pool() { check(lip_network_add_global_avg_pool(net_.get())); return *this; }
    size_t checkpoint() const { size_t id = 0; check(lip_network_checkpoint(net_.get(), &id)); return id; }
    Network &residual(size_t id) { check(lip_network_add_residual(net_.get(), id)); return *this; }

    size_t layers() const { return lip_network_layer_count(net_.get()); }
    std::string layer_name(size_t i) const { return lip_network_layer_name(net_.get(), i); }
    LipBound layer_bound(size_t i, const LipOptions &o) const { LipBound b{}; check(lip_network_layer_bound_ex(net_.get(), i, &o, &b)); return b; }
    LipBound bound(const LipOptions &o) const { LipBound b{}; check(lip_network_bound_ex(net_.get(), &o, &b)); return b; }

  private:
    explicit Network(LipNetwork *raw) : net_(raw, &lip_network_free) {
        if (!net_) throw Error(LIP_ERR_MODEL, lip_last_error());
    }
    std::unique_ptr<LipNetwork, void (*)(LipNetwork *)> net_;
};

}  // namespace lip

// The same deterministic weights as tests/c_examples.rs uses on the Rust side.
static std::vector<float> weights(size_t n, size_t salt) {
    std::vector<float> w(n);
    for (size_t i = 0; i < n; i++) w[i] = float(int((i * 7 + salt) % 11) - 5) / 20.0f;
    return w;
}

static LipConv2d conv3x3(uint32_t cin, uint32_t cout, uint32_t size) {
    LipConv2d c{};
    c.out_channels = cout; c.in_channels = cin; c.kernel_h = 3; c.kernel_w = 3;
    c.input_h = size; c.input_w = size; c.stride_h = 1; c.stride_w = 1;
    c.dilation_h = 1; c.dilation_w = 1; c.groups = 1;
    c.pad_top = 1; c.pad_left = 1; c.pad_bottom = 1; c.pad_right = 1;
    c.padding_mode = LIP_PADDING_ZEROS;
    return c;
}

int main() {
    try {
        lip::Network net({1, 3, 8, 8});
        std::vector<float> g(4, 1.5f), b(4, 0.1f), m(4, 0.0f), v(4, 2.0f);
        net.conv(weights(4 * 3 * 9, 0), conv3x3(3, 4, 8)).batch_norm(g, b, m, v).relu();
        size_t skip = net.checkpoint();
        net.conv(weights(4 * 4 * 9, 1), conv3x3(4, 4, 8)).relu().conv(weights(4 * 4 * 9, 2), conv3x3(4, 4, 8));
        net.residual(skip).relu().global_avg_pool().dense(weights(3 * 4, 3), 3, 4);

        LipOptions o = lip_options_default();
        o.rtol = 1e-6;
        for (size_t i = 0; i < net.layers(); i++) {
            LipBound lb = net.layer_bound(i, o);
            std::printf("layer %zu %s %.17g %.17g %d\n", i, net.layer_name(i).c_str(), lb.lower, lb.upper, lb.certificate);
        }
        LipBound nb = net.bound(o);
        std::printf("network %.17g %.17g %d\n", nb.lower, nb.upper, nb.certificate);

        // Errors are exceptions carrying the library's message.
        try {
            lip::Network bad({1, 3, 8, 8});
            bad.dense(weights(12, 0), 3, 4);  // the tensor has 8 entries on its last axis, not 4
            return 1;
        } catch (const lip::Error &e) {
            std::printf("error %d %s\n", e.status, e.what());
        }
        try {
            lip::Network::from_onnx("/no/such/model.onnx");
            return 1;
        } catch (const lip::Error &e) {
            std::printf("error %d %s\n", e.status, e.what());
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "unexpected: %s\n", e.what());
        return 1;
    }
    return 0;
}

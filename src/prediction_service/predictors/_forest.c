/* Branch-free evaluation of a forest of binary decision trees (see forest.py).
 *
 * All trees share flat node arrays. The two children of a node sit side by side, so a
 * step is `node = child[node] + (x[feature[node]] > threshold[node])`: no data-dependent
 * branch for the CPU to mispredict. A leaf is its own child with threshold +inf, so every
 * row takes exactly depth[t] steps in tree t, and G rows walk a tree together so their
 * independent load chains overlap. Rows are taken in blocks that stay in L1 while every
 * tree passes over them; each tree adds its leaf value to out[row * n_outputs + t % n_outputs],
 * in tree order, which is the order (and so the rounding) of LightGBM's own sum.
 *
 * forest_predict is called through ctypes, which releases the GIL around the call; the
 * module init below only makes this file a loadable extension for setuptools.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define G 8
#define BLOCK 256

#if defined(_WIN32)
#define EXPORT __declspec(dllexport)
#else
#define EXPORT __attribute__((visibility("default")))
#endif

EXPORT void forest_predict(const int32_t *feature, const double *threshold, const int32_t *child,
                           const double *value, const int32_t *roots, const int32_t *depth,
                           int32_t n_trees, int32_t n_outputs, const double *X, int64_t n_rows,
                           int32_t n_features, double *out) {
    for (int64_t r0 = 0; r0 < n_rows; r0 += BLOCK) {
        const int64_t r1 = r0 + BLOCK < n_rows ? r0 + BLOCK : n_rows;
        for (int32_t t = 0; t < n_trees; t++) {
            const int32_t root = roots[t], steps = depth[t], k = t % n_outputs;
            int64_t r = r0;
            for (; r + G <= r1; r += G) {
                const double *x = X + r * n_features;
                int32_t at[G];
                for (int j = 0; j < G; j++) at[j] = root;
                for (int32_t s = 0; s < steps; s++) {
                    for (int j = 0; j < G; j++) {
                        const int32_t n = at[j];
                        at[j] = child[n] + (x[j * n_features + feature[n]] > threshold[n]);
                    }
                }
                for (int j = 0; j < G; j++) out[(r + j) * n_outputs + k] += value[at[j]];
            }
            for (; r < r1; r++) {
                const double *x = X + r * n_features;
                int32_t n = root;
                for (int32_t s = 0; s < steps; s++) n = child[n] + (x[feature[n]] > threshold[n]);
                out[r * n_outputs + k] += value[n];
            }
        }
    }
}

/* One row: G trees walk it together instead (leaves are fixed points, so each group takes
 * the steps of its deepest tree). The sums still run in tree order. */
EXPORT void forest_predict_row(const int32_t *feature, const double *threshold,
                               const int32_t *child, const double *value, const int32_t *roots,
                               const int32_t *depth, int32_t n_trees, int32_t n_outputs,
                               const double *x, double *out) {
    int32_t t0 = 0;
    for (; t0 + G <= n_trees; t0 += G) {
        int32_t at[G], steps = 0;
        for (int j = 0; j < G; j++) {
            at[j] = roots[t0 + j];
            if (depth[t0 + j] > steps) steps = depth[t0 + j];
        }
        for (int32_t s = 0; s < steps; s++) {
            for (int j = 0; j < G; j++) {
                const int32_t n = at[j];
                at[j] = child[n] + (x[feature[n]] > threshold[n]);
            }
        }
        for (int j = 0; j < G; j++) out[(t0 + j) % n_outputs] += value[at[j]];
    }
    for (; t0 < n_trees; t0++) {
        int32_t n = roots[t0];
        for (int32_t s = 0; s < depth[t0]; s++) n = child[n] + (x[feature[n]] > threshold[n]);
        out[t0 % n_outputs] += value[n];
    }
}

static struct PyModuleDef forest_module = {
    PyModuleDef_HEAD_INIT, "_forest", "Native forest evaluation, called through ctypes.", -1, NULL,
};

PyMODINIT_FUNC PyInit__forest(void) { return PyModule_Create(&forest_module); }

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
#include <stdlib.h>

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

/* Exact per-feature contributions of each row (path-dependent TreeSHAP: Lundberg, Erion and
 * Lee, "Consistent individualized feature attribution for tree ensembles", 2018, Algorithm 2),
 * in the raw (pre-transform) space. count[] is the training rows that reached each node, as
 * LightGBM records them. For row r, out[(r * n_outputs + k) * (n_features + 1) + f] gets the
 * contribution of feature f to output k; index n_features is left for the output's expected
 * value (forest.py adds it), and the row's raw score is the sum of all of them. The path of the features split on so far, with the
 * fraction of "zero" (feature unknown: rows flow by count) and "one" (feature known: the row's
 * own way) paths, and each subset size's weight, lives in one buffer, a slice per level. */
typedef struct {
    int32_t feature;
    double zero, one, weight;
} Step;

static void extend_path(Step *path, int32_t last, double zero, double one, int32_t feature) {
    path[last] = (Step){feature, zero, one, last == 0 ? 1.0 : 0.0};
    for (int32_t i = last - 1; i >= 0; i--) {
        path[i + 1].weight += one * path[i].weight * (i + 1) / (double)(last + 1);
        path[i].weight = zero * path[i].weight * (last - i) / (double)(last + 1);
    }
}

static void unwind_path(Step *path, int32_t last, int32_t at) {
    const double one = path[at].one, zero = path[at].zero;
    double next = path[last].weight;
    for (int32_t j = last - 1; j >= 0; j--) {
        if (one != 0) {
            const double w = path[j].weight;
            path[j].weight = next * (last + 1) / ((j + 1) * one);
            next = w - path[j].weight * zero * (last - j) / (double)(last + 1);
        } else {
            path[j].weight = path[j].weight * (last + 1) / (zero * (last - j));
        }
    }
    for (int32_t j = at; j < last; j++) {
        path[j].feature = path[j + 1].feature;
        path[j].zero = path[j + 1].zero;
        path[j].one = path[j + 1].one;
    }
}

/* The weights' sum once step `at` is unwound, without unwinding it. */
static double unwound_sum(const Step *path, int32_t last, int32_t at) {
    const double one = path[at].one, zero = path[at].zero;
    double next = path[last].weight, total = 0;
    for (int32_t j = last - 1; j >= 0; j--) {
        if (one != 0) {
            const double w = next * (last + 1) / ((j + 1) * one);
            total += w;
            next = path[j].weight - w * zero * (last - j) / (double)(last + 1);
        } else {
            total += path[j].weight * (last + 1) / (zero * (last - j));
        }
    }
    return total;
}

typedef struct {
    const int32_t *feature, *child;
    const double *threshold, *value, *count, *x;
    double *phi;
} ShapTree;

static void shap_node(const ShapTree *t, int32_t node, Step *parent, int32_t last, double zero,
                      double one, int32_t feature) {
    Step *path = parent + last + 1;
    for (int32_t i = 0; i < last + 1; i++) path[i] = parent[i];
    extend_path(path, last, zero, one, feature);
    const int32_t left = t->child[node];
    if (left == node) { /* a leaf */
        /* A step the row did not take (one == 0) unwinds to cold / zero, so it adds
         * -cold * value whatever its zero fraction: one sum serves them all (the observation
         * behind Yang's Fast TreeSHAP v1), where each took its own O(depth) sum. */
        double cold = 0;
        for (int32_t j = 0; j < last; j++) cold += path[j].weight * (last + 1) / (double)(last - j);
        for (int32_t i = 1; i <= last; i++) {
            if (path[i].one == 0) {
                t->phi[path[i].feature] -= cold * t->value[node];
            } else {
                const double w = unwound_sum(path, last, i);
                t->phi[path[i].feature] += w * (1 - path[i].zero) * t->value[node];
            }
        }
        return;
    }
    const int32_t split = t->feature[node];
    const int32_t hot = left + (t->x[split] > t->threshold[node]), cold = 2 * left + 1 - hot;
    double in_zero = 1, in_one = 1;
    int32_t k = 1;
    while (k <= last && path[k].feature != split) k++;
    if (k <= last) { /* split on this feature before: undo that step, keep its fractions */
        in_zero = path[k].zero;
        in_one = path[k].one;
        unwind_path(path, last, k);
        last--;
    }
    const double n = t->count[node];
    shap_node(t, hot, path, last + 1, in_zero * t->count[hot] / n, in_one, split);
    shap_node(t, cold, path, last + 1, in_zero * t->count[cold] / n, 0, split);
}

EXPORT void forest_shap(const int32_t *feature, const double *threshold, const int32_t *child,
                        const double *value, const int32_t *roots, const int32_t *depth,
                        int32_t n_trees, int32_t n_outputs, const double *count, const double *X,
                        int64_t n_rows, int32_t n_features, double *out) {
    int32_t deepest = 0;
    for (int32_t t = 0; t < n_trees; t++) deepest = depth[t] > deepest ? depth[t] : deepest;
    Step *buffer = malloc(sizeof(Step) * (size_t)(deepest + 2) * (size_t)(deepest + 3));
    if (buffer == NULL) return; /* the caller sees all zeros and refuses them */
    for (int64_t r = 0; r < n_rows; r++) {
        for (int32_t t = 0; t < n_trees; t++) {
            double *phi = out + (r * n_outputs + t % n_outputs) * (n_features + 1);
            const ShapTree tree = {feature, child, threshold, value, count,
                                   X + r * n_features, phi};
            shap_node(&tree, roots[t], buffer, 0, 1, 1, -1);
        }
    }
    free(buffer);
}

static struct PyModuleDef forest_module = {
    PyModuleDef_HEAD_INIT, "_forest", "Native forest evaluation, called through ctypes.", -1, NULL,
};

PyMODINIT_FUNC PyInit__forest(void) { return PyModule_Create(&forest_module); }

/* colpg's probe kernel: what colpg.probe computes in PyTorch, fused into one pass over the tokens.

   For every token under a probed centroid, its similarity with every query token is the centroid's
   score plus one table row per residual byte (colpg.codec's query table), and each document keeps,
   per query token, the best of its tokens. PyTorch does this in three passes through memory (gather
   the residuals, sum table rows into an [n, q] tensor, scatter the maxima per document); here a
   token's sums stay in registers from its first byte to its document's row, two tokens at a time
   so that their table reads overlap. The table is int16, scaled by colpg.kernel: one vector add
   covers 16 query tokens where float covers 8. GCC/Clang vector extensions, no intrinsics: the
   same source builds on any CPU the compiler targets. colpg.kernel compiles it at first use and
   calls it through ctypes, which releases the GIL, so parts of one probe run on threads. */

#include <stdint.h>
#include <string.h>

/* Query tokens are taken LANES at a time; colpg.kernel reads colpg_lanes and pads the query to a multiple. */
#define LANES 32
const int64_t colpg_lanes = LANES;

typedef float vec __attribute__((vector_size(32)));
typedef int32_t mask __attribute__((vector_size(32)));
typedef int32_t ints __attribute__((vector_size(32)));
typedef int16_t shorts __attribute__((vector_size(32)));
typedef int16_t half_shorts __attribute__((vector_size(16)));

static inline vec load(const float *p) { vec v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, vec v) { memcpy(p, &v, sizeof v); }
static inline shorts load_shorts(const int16_t *p) { shorts v; memcpy(&v, p, sizeof v); return v; }
static inline vec larger(vec a, vec b) { mask m = a > b; return (vec)(((mask)a & m) | ((mask)b & ~m)); }

/* Eight of sixteen integer sums as floats: ``half`` 0 the first eight, 1 the last. */
static inline vec to_float(shorts sums, int half)
{
    half_shorts part;
    memcpy(&part, (const char *)&sums + 16 * half, sizeof part);
    return __builtin_convertvector(__builtin_convertvector(part, ints), vec);
}

/* Give each document owning a token of ``cells`` a local number, in the order first met:
   local_of[slot] (-1: none yet) and slots[local]. Returns the documents numbered so far. */
int64_t colpg_number(const int64_t *offsets, const int32_t *owners, const int64_t *cells, int64_t ncells,
                     int32_t *local_of, int32_t *slots, int64_t numbered)
{
    for (int64_t i = 0; i < ncells; i++) {
        const int64_t cell = cells[i];
        for (int64_t t = offsets[cell]; t < offsets[cell + 1]; t++) {
            const int32_t slot = owners[t];
            if (local_of[slot] < 0) {
                local_of[slot] = (int32_t)numbered;
                slots[numbered++] = slot;
            }
        }
    }
    return numbered;
}

/* Raise a document's row by one token's similarities: the cell's score plus its sums, scaled. */
static inline void keep_best(float *row, const float *base, const float *scale, shorts low, shorts high)
{
    store(row, larger(load(row), load(base) + to_float(low, 0) * load(scale)));
    store(row + 8, larger(load(row + 8), load(base + 8) + to_float(low, 1) * load(scale + 8)));
    store(row + 16, larger(load(row + 16), load(base + 16) + to_float(high, 0) * load(scale + 16)));
    store(row + 24, larger(load(row + 24), load(base + 24) + to_float(high, 1) * load(scale + 24)));
}

/* table [width * 256, q] int16: row (b * 256 + v) is what value v of residual byte b adds to each
   query token's similarity, in units of scale [q] and small enough that width of them add up
   without overflow; cell_scores [ncells, q]: each probed centroid's score for each query token;
   best [numbered, q], -inf where no token has been scored yet, raised in place. q % LANES == 0. */
void colpg_score(const int16_t *table, const float *scale, const float *cell_scores, int64_t q, int64_t width,
                 const int64_t *offsets, const uint8_t *residuals, const int32_t *owners,
                 const int64_t *cells, int64_t ncells, const int32_t *local_of, float *best)
{
    for (int64_t i = 0; i < ncells; i++) {
        const int64_t cell = cells[i], end = offsets[cell + 1];
        for (int64_t lane = 0; lane < q; lane += LANES) {
            const float *base = cell_scores + i * q + lane, *units = scale + lane;
            int64_t t = offsets[cell];
            for (; t + 1 < end; t += 2) {
                const uint8_t *x = residuals + t * width, *y = x + width;
                shorts a0 = {0}, a1 = {0}, c0 = {0}, c1 = {0};
                for (int64_t b = 0; b < width; b++) {
                    const int16_t *r = table + ((b << 8) | x[b]) * q + lane, *s = table + ((b << 8) | y[b]) * q + lane;
                    a0 += load_shorts(r), a1 += load_shorts(r + 16);
                    c0 += load_shorts(s), c1 += load_shorts(s + 16);
                }
                keep_best(best + (int64_t)local_of[owners[t]] * q + lane, base, units, a0, a1);
                keep_best(best + (int64_t)local_of[owners[t + 1]] * q + lane, base, units, c0, c1);
            }
            if (t < end) {
                const uint8_t *x = residuals + t * width;
                shorts a0 = {0}, a1 = {0};
                for (int64_t b = 0; b < width; b++) {
                    const int16_t *r = table + ((b << 8) | x[b]) * q + lane;
                    a0 += load_shorts(r), a1 += load_shorts(r + 16);
                }
                keep_best(best + (int64_t)local_of[owners[t]] * q + lane, base, units, a0, a1);
            }
        }
    }
}

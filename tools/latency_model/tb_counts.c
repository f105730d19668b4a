/* tb_counts: a qemu-user TCG plugin that counts how often each translation block of the guest
 * program runs, for the static latency model (tools/latency_model/README.md).
 *
 *   qemu-aarch64 -plugin ./libtb_counts.so,out=counts.txt,marker=113 ./program ...
 *
 * For every block it records the guest address of its first instruction, its instruction count
 * and its length in bytes, and adds 1 to the block's counter each time it executes (an inline
 * add compiled into the translated code, so counting costs a few percent, not a callback per
 * block). A block translated twice (after a flush) gets two records with the same address; the
 * reader adds them up.
 *
 * Segments: with marker=N (repeatable), every guest system call N closes a segment: the counts
 * since the previous one are written out and the next segment starts. With the engine's profile
 * (clock_gettime before and after each step) this splits a run into its steps. Without a
 * marker, the whole run is one segment, written at exit.
 *
 * Output (text): "segment K" then one line per block that ran in it,
 *   <vaddr hex> <instructions> <bytes> <executions in this segment>
 * and "end" after the last segment. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu_plugin_api.h"

QBINFER_PLUGIN_EXPORT int qemu_plugin_version = QBINFER_QEMU_PLUGIN_API_LEVEL;

typedef struct BlockRecord {
  uint64_t vaddr;
  uint64_t executions; /* incremented by the translated code */
  uint64_t written;    /* executions already written in earlier segments */
  uint32_t instructions;
  uint32_t bytes;
} BlockRecord;

/* Records live in fixed chunks that never move: the translated code holds pointers into them. */
enum { kChunkRecords = 8192, kMaxMarkers = 8 };
typedef struct Chunk {
  BlockRecord records[kChunkRecords];
  size_t used;
  struct Chunk* next;
} Chunk;

static Chunk* g_first;
static Chunk* g_last;
static FILE* g_out;
static uint64_t g_segment;
static int64_t g_markers[kMaxMarkers];
static int g_marker_count;

static BlockRecord* new_record(void) {
  if (g_last == NULL || g_last->used == kChunkRecords) {
    Chunk* c = calloc(1, sizeof(Chunk));
    if (c == NULL) {
      fprintf(stderr, "tb_counts: out of memory\n");
      abort();
    }
    if (g_last != NULL)
      g_last->next = c;
    else
      g_first = c;
    g_last = c;
  }
  return &g_last->records[g_last->used++];
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb* tb) {
  (void)id;
  BlockRecord* r = new_record();
  const size_t n = qemu_plugin_tb_n_insns(tb);
  r->vaddr = qemu_plugin_tb_vaddr(tb);
  r->instructions = (uint32_t)n;
  uint32_t bytes = 0;
  for (size_t i = 0; i < n; ++i)
    bytes += (uint32_t)qemu_plugin_insn_size(qemu_plugin_tb_get_insn(tb, i));
  r->bytes = bytes;
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &r->executions, 1);
}

/* Writes the executions since the last segment and starts the next one. */
static void write_segment(void) {
  fprintf(g_out, "segment %" PRIu64 "\n", g_segment++);
  for (Chunk* c = g_first; c != NULL; c = c->next) {
    for (size_t i = 0; i < c->used; ++i) {
      BlockRecord* r = &c->records[i];
      if (r->executions == r->written) continue;
      fprintf(g_out, "%" PRIx64 " %u %u %" PRIu64 "\n", r->vaddr, r->instructions, r->bytes,
              r->executions - r->written);
      r->written = r->executions;
    }
  }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1,
                       uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7,
                       uint64_t a8) {
  (void)id, (void)vcpu, (void)a1, (void)a2, (void)a3, (void)a4, (void)a5, (void)a6, (void)a7,
      (void)a8;
  for (int i = 0; i < g_marker_count; ++i) {
    if (num == g_markers[i]) {
      write_segment();
      return;
    }
  }
}

static void on_exit_cb(qemu_plugin_id_t id, void* userdata) {
  (void)id, (void)userdata;
  write_segment();
  fputs("end\n", g_out);
  fclose(g_out);
  g_out = NULL;
}

QBINFER_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t* info,
                                              int argc, char** argv) {
  (void)info;
  const char* out_path = NULL;
  for (int i = 0; i < argc; ++i) {
    if (strncmp(argv[i], "out=", 4) == 0) {
      out_path = argv[i] + 4;
    } else if (strncmp(argv[i], "marker=", 7) == 0 && g_marker_count < kMaxMarkers) {
      g_markers[g_marker_count++] = strtoll(argv[i] + 7, NULL, 10);
    } else {
      fprintf(stderr, "tb_counts: unknown argument '%s' (takes out=PATH, marker=SYSCALL)\n",
              argv[i]);
      return 1;
    }
  }
  if (out_path == NULL) {
    fprintf(stderr, "tb_counts: out=PATH is required\n");
    return 1;
  }
  g_out = fopen(out_path, "w");
  if (g_out == NULL) {
    perror(out_path);
    return 1;
  }
  /* Segments are written while the guest runs: a large buffer keeps that cheap. */
  setvbuf(g_out, NULL, _IOFBF, 1 << 20);
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  if (g_marker_count > 0) qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
  qemu_plugin_register_atexit_cb(id, on_exit_cb, NULL);
  return 0;
}

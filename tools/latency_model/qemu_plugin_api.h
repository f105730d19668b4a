/* The handful of QEMU TCG plugin API declarations that tb_counts.c calls, written from QEMU's
 * plugin documentation (docs/devel/tcg-plugins.rst, "API"), so that the plugin builds without a
 * QEMU source tree: Debian's qemu-user ships the plugin loader but no header. The functions are
 * resolved at load time from the qemu-user executable that loads the plugin.
 *
 * API level 1 is what qemu-user 7.2 (Debian 12) through 8.x accept; a plugin states the level it
 * was built for in the exported integer qemu_plugin_version. */
#ifndef QBINFER_TOOLS_QEMU_PLUGIN_API_H_
#define QBINFER_TOOLS_QEMU_PLUGIN_API_H_

#include <stddef.h>
#include <stdint.h>

#define QBINFER_QEMU_PLUGIN_API_LEVEL 1
#define QBINFER_PLUGIN_EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;

/* Handed to qemu_plugin_install; only target_name is read here (the struct's later fields are
 * never touched, so their layout does not matter to this plugin). */
typedef struct qemu_info_t {
  const char* target_name;
} qemu_info_t;

/* Opaque handles owned by QEMU. */
struct qemu_plugin_tb;
struct qemu_plugin_insn;

/* The only inline operation QEMU offers: add an immediate to a uint64_t in memory. */
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 = 0 };

typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void* userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb* tb);
typedef void (*qemu_plugin_vcpu_syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index,
                                              int64_t num, uint64_t a1, uint64_t a2, uint64_t a3,
                                              uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7,
                                              uint64_t a8);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb* tb, enum qemu_plugin_op op,
                                              void* ptr, uint64_t imm);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_syscall_cb_t cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void* userdata);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb* tb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb* tb);
struct qemu_plugin_insn* qemu_plugin_tb_get_insn(const struct qemu_plugin_tb* tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn* insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn* insn);

#endif /* QBINFER_TOOLS_QEMU_PLUGIN_API_H_ */

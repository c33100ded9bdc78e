/* SPDX-License-Identifier: MIT */
#pragma once

/*
 * Log capture of instances (SPEC §2 `logs`), for `orch logs` (SPEC §3, §4).
 *
 * An instance writes straight to its file: orch_logs_open() opens
 * <data-dir>/logs/<instance>.log with O_WRONLY|O_APPEND|O_CREAT (0640) and
 * the spawn duplicates that descriptor onto the child's stdout and stderr, so
 * both streams interleave in write order. Nothing sits between the instance
 * and the file: the agent never blocks an instance, holds no memory per byte
 * written, and an agent restart (or crash) leaves the instance untouched — no
 * pipe whose reader is gone, no SIGPIPE.
 *
 * Rotation is the agent's: a timer (every `period_ms`, 500 ms by default)
 * and orch_logs_check() fstat each open file; a file above `max_size` is
 * rotated copy-truncate: <id>.log.N-1 -> .N ..., the live file copied into
 * <id>.log.1 in the kernel (copy_file_range), then truncated. The instance
 * keeps its descriptor, and O_APPEND puts its next write at the new end.
 * `max_files` counts the live file: at most max_files - 1 rotated files are
 * kept. What is written between the last copy and the truncation is lost;
 * docs/agent.md ("Logs") describes that window.
 *
 * Readers: orch_logs_tail() returns the last lines across the rotated files
 * with bounded memory; a follower delivers bytes as they are appended and
 * follows them through rotations (it reads the rest of what it had not seen
 * from <id>.log.1 before it goes on with the live file).
 *
 * Memory: an open file costs one small struct (its name and a descriptor);
 * the timer is shared by all of them.
 */

#include <stdint.h>

#include <uv.h>

#include "macro.h"
#include "util.h"

#define ORCH_LOGS_PERIOD_MS 500
/* Instance names are file names here: [A-Za-z0-9][A-Za-z0-9_-]*, at most this long. */
#define ORCH_LOGS_NAME_MAX 128
/* The most files (live included) a log may keep; bounds the renames of one rotation. */
#define ORCH_LOGS_MAX_FILES 100

struct orch_logs;
struct orch_log_file;
struct orch_log_follower;

/* Creates <data_dir>/logs (0750) and starts the rotation timer (period_ms 0: the default). */
int orch_logs_new(uv_loop_t *loop, const char *data_dir, uint64_t period_ms, struct orch_logs **ret);
/* Closes every file still open and cancels every follower still registered (their pointers are
 * invalid afterwards); the memory goes when libuv has closed the handles. Accepts NULL. */
void orch_logs_free(struct orch_logs *l);
/* <data_dir>/logs */
const char *orch_logs_dir(const struct orch_logs *l);

/*
 * Opens (creating it if needed) the live log file of `instance` and rotates it right away when
 * it is already above max_size (a restart after a crash loop, say). Rotated files beyond
 * max_files - 1 left by an earlier, larger setting are removed. -EINVAL for a bad name, a
 * max_size of 0 or max_files outside 1..ORCH_LOGS_MAX_FILES; -EBUSY when it is open already.
 */
int orch_logs_open(struct orch_logs *l, const char *instance, uint64_t max_size, uint32_t max_files,
                   struct orch_log_file **ret);
/* The descriptor to put on the instance's stdout and stderr (owned by the file; dup it). */
int orch_logs_file_fd(const struct orch_log_file *f);
/* Rotates now if the file is above its max_size: 1 rotated, 0 nothing to do, -errno. The spawn
 * path calls it when an instance (re)starts; the timer calls it for every open file. */
int orch_logs_check(struct orch_log_file *f);
/* Stops rotating the file and closes the agent's descriptor (the instance keeps its own).
 * Accepts NULL. */
void orch_logs_close(struct orch_log_file *f);

/* Deletes the live and rotated files of `instance` and ends its followers (their callback
 * gets r = 0). -EBUSY while the file is open; 0 when there was nothing to delete. */
int orch_logs_remove(struct orch_logs *l, const char *instance);

/*
 * Appends to `out` the last `n_lines` lines of the log of `instance`, oldest first, reading
 * back through the rotated files as far as needed. At most `max_bytes` are appended: when the
 * lines are longer, the oldest are dropped (and if a single line is longer, its end is kept).
 * A last line without its newline counts as a line. *ret_end (may be NULL) gets the size of
 * the live file the tail ends at: orch_logs_follow() from there continues without a gap or a
 * repeat. -ENOENT when the instance has no log.
 */
int orch_logs_tail(struct orch_logs *l, const char *instance, size_t n_lines, size_t max_bytes,
                   struct orch_buf *out, uint64_t *ret_end);

/*
 * Data: called with r = 0 and len > 0, at most ORCH_LOGS_FOLLOW_CHUNK bytes at a time, in order.
 * End: called once with data = NULL, len = 0 and r = 0 when the log was removed, or r < 0 on a
 * read error; nothing is delivered after that, and the caller still cancels the follower.
 * The callback may pause or cancel the follower.
 */
typedef void (*orch_logs_follow_cb)(struct orch_log_follower *f, const char *data, size_t len, int r,
                                    void *userdata);

#define ORCH_LOGS_FOLLOW_CHUNK (16 * 1024)
#define ORCH_LOGS_FOLLOW_END   UINT64_MAX

/*
 * Follows the live file of `instance` from `offset` (ORCH_LOGS_FOLLOW_END: its current end;
 * usually the *ret_end of a tail). New bytes are noticed through inotify (uv_fs_event), or by
 * polling the file when inotify is unavailable. When the file is rotated the follower first
 * delivers what it had not read yet from the rotated copy; when it shrinks for another reason
 * (truncated by hand) it continues from the start. -ENOENT when the instance has no log.
 */
int orch_logs_follow(struct orch_logs *l, const char *instance, uint64_t offset, orch_logs_follow_cb cb,
                     void *userdata, struct orch_log_follower **ret);
/* Back-pressure: a paused follower reads nothing until resumed (its position is kept, through
 * rotations too, as long as the rotated copy it needs is still kept). */
void orch_logs_follower_pause(struct orch_log_follower *f);
void orch_logs_follower_resume(struct orch_log_follower *f);
/* No callback after this returns; memory is freed once the handles are closed. Accepts NULL. */
void orch_logs_follower_cancel(struct orch_log_follower *f);

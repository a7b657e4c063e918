#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>
#include <sys/types.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <microhttpd.h>

/* MHD_start_daemon is C-variadic, which Swift cannot call: this fixed-signature wrapper passes
 * the options tokenledger uses (Sources/LedgerServer/HTTPServer.swift). The listening socket is
 * created and bound by the Swift side (so `--http 127.0.0.1:0` works like `--listen`) and from
 * here on belongs to the daemon, which closes it in MHD_stop_daemon. Each vararg is cast to
 * the exact type MHD reads for its option: a wrong width would be read as garbage. */
static inline struct MHD_Daemon *tl_mhd_start(unsigned int flags, int listen_fd, unsigned int thread_pool_size,
                                              unsigned int connection_limit, unsigned int connection_timeout_s,
                                              size_t connection_memory_limit,
                                              MHD_AccessHandlerCallback handler, void *handler_cls,
                                              MHD_RequestCompletedCallback completed, void *completed_cls) {
    return MHD_start_daemon(flags, 0, NULL, NULL, handler, handler_cls,
                            MHD_OPTION_LISTEN_SOCKET, (MHD_socket)listen_fd,
                            MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)thread_pool_size,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned int)connection_limit,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)connection_timeout_s,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)connection_memory_limit,
                            MHD_OPTION_NOTIFY_COMPLETED, completed, completed_cls,
                            MHD_OPTION_END);
}

/* Small libusb-1.0 probes the Rust tests run against the shim (built against Debian's libusb.h):
 *   probe abi           options through the variadic libusb_set_option, log callback, names,
 *                       version, capabilities, locale; needs no emulator
 *   probe absent        no emulator: init succeeds with zero devices
 *   probe read MS       open the first device, then a bulk IN read of 0x81 with an MS timeout and
 *                       a control transfer; prints each result and the time the read took
 * Prints "key value" lines; exit 0 unless a step could not run at all. */
#include <libusb-1.0/libusb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int log_calls;
static void log_cb(libusb_context *ctx, enum libusb_log_level level, const char *str) {
    (void)ctx;
    (void)level;
    if (str && strstr(str, "libusb"))
        log_calls++;
}

static int abi(void) {
    libusb_context *ctx;
    if (libusb_init(&ctx) != 0)
        return 1;
    /* The variadic argument as C passes it: an int, and a pointer. */
    printf("set_option_log_level_3 %d\n", libusb_set_option(ctx, LIBUSB_OPTION_LOG_LEVEL, 3));
    printf("set_option_log_level_9 %d\n", libusb_set_option(ctx, LIBUSB_OPTION_LOG_LEVEL, 9));
    printf("set_option_log_level_neg %d\n", libusb_set_option(ctx, LIBUSB_OPTION_LOG_LEVEL, -1));
    printf("set_option_usbdk %d\n", libusb_set_option(ctx, LIBUSB_OPTION_USE_USBDK));
    printf("set_option_unknown %d\n", libusb_set_option(ctx, (enum libusb_option)42, 0));
    /* An int variadic leaves the register's upper half undefined: only the low 32 bits count. */
    int (*raw)(libusb_context *, int, unsigned long) = (int (*)(libusb_context *, int, unsigned long))libusb_set_option;
    printf("set_option_dirty_upper_half %d\n", raw(ctx, LIBUSB_OPTION_LOG_LEVEL, 0xdeadbeef00000002UL));
    /* LIBUSB_OPTION_LOG_CB (3, libusb 1.0.27) takes a function pointer. */
    printf("set_option_log_cb %d\n", libusb_set_option(ctx, (enum libusb_option)3, log_cb));
    libusb_set_option(ctx, LIBUSB_OPTION_LOG_LEVEL, LIBUSB_LOG_LEVEL_DEBUG);
    libusb_device **list;
    ssize_t n = libusb_get_device_list(ctx, &list);
    libusb_free_device_list(list, 1);
    printf("devices %zd\n", n);
    printf("log_cb_called %d\n", log_calls > 0);
    libusb_exit(ctx);

    const struct libusb_version *v = libusb_get_version();
    printf("version %u.%u.%u\n", v->major, v->minor, v->micro);
    printf("cap_has_capability %d\n", libusb_has_capability(LIBUSB_CAP_HAS_CAPABILITY));
    printf("cap_hotplug %d\n", libusb_has_capability(LIBUSB_CAP_HAS_HOTPLUG));
    printf("error_name_-4 %s\n", libusb_error_name(LIBUSB_ERROR_NO_DEVICE));
    printf("error_name_3 %s\n", libusb_error_name(LIBUSB_TRANSFER_CANCELLED));
    printf("error_name_77 %s\n", libusb_error_name(77));
    printf("strerror_-7 %s\n", libusb_strerror(LIBUSB_ERROR_TIMEOUT));
    printf("setlocale_en %d\n", libusb_setlocale("en_US.UTF-8"));
    printf("setlocale_xx %d\n", libusb_setlocale("xx"));
    printf("hotplug_register %d\n",
           libusb_hotplug_register_callback(NULL, LIBUSB_HOTPLUG_EVENT_DEVICE_ARRIVED, 0, LIBUSB_HOTPLUG_MATCH_ANY,
                                            LIBUSB_HOTPLUG_MATCH_ANY, LIBUSB_HOTPLUG_MATCH_ANY, NULL, NULL, NULL));
    struct libusb_transfer *t = libusb_alloc_transfer(2);
    printf("iso_packets %d\n", t ? t->num_iso_packets : -1);
    libusb_transfer_set_stream_id(t, 7);
    printf("stream_id %u\n", libusb_transfer_get_stream_id(t));
    t->buffer = malloc(16);
    t->flags = LIBUSB_TRANSFER_FREE_BUFFER;
    libusb_free_transfer(t);
    return 0;
}

static int absent(void) {
    long t0 = now_ms();
    libusb_context *ctx;
    int r = libusb_init(&ctx);
    printf("init %d\n", r);
    if (r != 0)
        return 1;
    libusb_device **list;
    ssize_t n = libusb_get_device_list(ctx, &list);
    printf("devices %zd\n", n);
    if (n >= 0)
        libusb_free_device_list(list, 1);
    printf("open_vid_pid %s\n", libusb_open_device_with_vid_pid(ctx, 0x5ca1, 0x0001) ? "handle" : "null");
    libusb_exit(ctx);
    printf("elapsed_ms %ld\n", now_ms() - t0);
    return 0;
}

static int read_probe(unsigned timeout) {
    libusb_context *ctx;
    if (libusb_init(&ctx) != 0)
        return 1;
    libusb_device **list;
    ssize_t n = libusb_get_device_list(ctx, &list);
    printf("devices %zd\n", n);
    if (n < 1)
        return 1;
    libusb_device_handle *h;
    int r = libusb_open(list[0], &h);
    libusb_free_device_list(list, 1);
    printf("open %d\n", r);
    if (r != 0)
        return 1;
    printf("claim %d\n", libusb_claim_interface(h, 0));
    printf("ready\n");
    fflush(stdout);
    unsigned char buf[4096];
    int got = -1;
    long t0 = now_ms();
    r = libusb_bulk_transfer(h, 0x81, buf, sizeof buf, &got, timeout);
    printf("bulk %s\n", libusb_error_name(r));
    printf("transferred %d\n", got);
    printf("elapsed_ms %ld\n", now_ms() - t0);
    r = libusb_control_transfer(h, 0xc1, 0x67, 0, 0, buf, 8, 1000);
    printf("control %s\n", r >= 0 ? "data" : libusb_error_name(r));
    libusb_close(h);
    libusb_exit(ctx);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "abi"))
        return abi();
    if (argc >= 2 && !strcmp(argv[1], "absent"))
        return absent();
    if (argc >= 3 && !strcmp(argv[1], "read"))
        return read_probe((unsigned)atoi(argv[2]));
    fprintf(stderr, "usage: probe abi | absent | read TIMEOUT_MS\n");
    return 2;
}

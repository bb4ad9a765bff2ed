/**
 * What every nbdsh script of the tests starts with: `expect(ERR, f)` runs
 * `f` and asserts that the server answered it with the NBD error ERR (an
 * errno name, e.g. "EINVAL").
 *
 * @example
 * ```ts
 * await run("nbdsh", ["-u", uri, "-c", NBDSH_PREAMBLE + 'expect("EINVAL", lambda: h.pread(1, 1 << 40))']);
 * ```
 */
export const NBDSH_PREAMBLE = `
import errno
def expect(err, f):
    try:
        f()
    except nbd.Error as e:
        assert e.errno == errno.errorcode[err], (e.errno, errno.errorcode[err], e.string)
        return
    raise AssertionError("no error, expected " + errno.errorcode[err])
`;

-- farm-dev-1.rockspec -- the Lua module `farm` (farm.so) and the `farm`
-- command its workers run, built by the Makefile. From the top of a checkout:
--
--   luarocks make scripts/farm-dev-1.rockspec            (or --local, or --tree DIR)
--
-- then `require "farm"` in lua5.4. Needs Debian's liblua5.4-dev, libnanomsg-dev,
-- libsodium-dev and libssh2-1-dev (scripts/deps.sh installs them).
rockspec_format = "3.0"
package = "farm"
version = "dev-1"
source = {
  -- luarocks make builds the checkout it runs in; this is where one comes from
  url = "git+file:///farm",
}
description = {
  summary = "A task farm whose jobs are Lua 5.4 functions",
  detailed = [[
    farm runs Lua functions in parallel on local worker processes and on
    remote nodes: farm.submit(fn, ...) gives a future, farm.map(fn, list)
    a list. Functions travel as source text with their upvalues.
  ]],
  license = "MIT",
}
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  NANOMSG = { header = "nanomsg/nn.h" },
  SODIUM = { header = "sodium.h" },
  LIBSSH2 = { header = "libssh2.h" },
}
build = {
  type = "make",
  build_target = "rock",
  install_target = "rock-install",
  -- CFLAGS stay the Makefile's own (it adds its include paths to them)
  build_variables = {},
  install_variables = {
    INST_LIBDIR = "$(LIBDIR)",
    INST_BINDIR = "$(BINDIR)",
  },
}

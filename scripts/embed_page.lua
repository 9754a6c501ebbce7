-- embed_page.lua OUT.h NAME FILE: FILE's bytes as `static const char NAME[]`
-- in a C header (the status page, core/status_page.html, compiled into farm).
local out, name, path = ...
local f = assert(io.open(path, "rb"))
local text = f:read("a")
f:close()
local parts = { ("/* made by scripts/embed_page.lua from %s: do not edit */\n"):format(path),
  ("static const char %s[] =\n"):format(name) }
for line in text:gmatch("[^\n]*\n?") do
  if line ~= "" then
    parts[#parts + 1] = '  "' .. line:gsub('[\\"\n\r\t%c]', function(c)
      return ({ ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" })[c]
        or ("\\%03o"):format(c:byte())
    end) .. '"\n'
  end
end
parts[#parts + 1] = "  ;\n"
local o = assert(io.open(out .. ".tmp", "wb"))
o:write(table.concat(parts))
o:close()
assert(os.rename(out .. ".tmp", out))

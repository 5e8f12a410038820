-- a spec may not touch files
local f = io.open("/etc/passwd")
return { name = "bad_sandbox" }

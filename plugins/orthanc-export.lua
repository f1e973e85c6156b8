-- Orthanc → ldae: when a series becomes stable in Orthanc, write its instances into ldae's drop folder.
--
-- Each instance is written as <drop>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm, first under a
-- hidden temporary name and then renamed, so ldae (which ignores hidden and *.part names and waits for files to
-- settle) never reads half a file. Each UID becomes one safe path part (see `safe`: a hostile value such as
-- `..` or `../../etc` can never leave the drop folder); nothing from the patient's name is used.
--
-- Orthanc configuration:  "LuaScripts" : [ "/path/to/orthanc-export.lua" ],  "StableAge" : 60
-- Drop folder: the LDAE_DROP environment variable of the Orthanc process, else the default below.

local DROP = os.getenv('LDAE_DROP') or '/var/lib/ldae/incoming'

local function safe(uid)
  -- One path component from a UID: digits and single inner dots only (a valid UID), anything else becomes '_';
  -- runs of dots and a leading or trailing dot become '_' too, so '.' and '..' (and '.hidden') cannot occur.
  local s = string.gsub(uid or '', '[^0-9.]', '_')
  s = string.gsub(s, '%.%.+', '_')
  s = string.gsub(s, '^%.', '_')
  s = string.gsub(s, '%.$', '_')
  s = string.sub(s, 1, 64)
  if s == '' then s = 'unknown' end
  return s
end

local function mkdir(path)
  os.execute('mkdir -p "' .. path .. '"')
end

function OnStableSeries(seriesId, tags, metadata)
  local series = ParseJson(RestApiGet('/series/' .. seriesId))
  local study = ParseJson(RestApiGet('/series/' .. seriesId .. '/study'))
  local dir = DROP .. '/' .. safe(study['MainDicomTags']['StudyInstanceUID']) .. '/' ..
              safe(series['MainDicomTags']['SeriesInstanceUID'])
  mkdir(dir)
  for _, instanceId in pairs(series['Instances']) do
    local instance = ParseJson(RestApiGet('/instances/' .. instanceId))
    local sop = safe(instance['MainDicomTags']['SOPInstanceUID'])
    local dicom = RestApiGet('/instances/' .. instanceId .. '/file')
    local tmp = dir .. '/.' .. sop .. '.dcm.part'
    local final = dir .. '/' .. sop .. '.dcm'
    local f = assert(io.open(tmp, 'wb'))
    f:write(dicom)
    f:close()
    assert(os.rename(tmp, final))
  end
  print('ldae export: series ' .. seriesId .. ' (' .. #series['Instances'] .. ' instances) -> ' .. dir)
end

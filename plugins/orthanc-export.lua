-- Orthanc → ldae: when a series becomes stable in Orthanc, write its instances into ldae's drop folder.
--
-- Each instance is written as <drop>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm, first under a
-- hidden temporary name and then renamed, so ldae (which ignores hidden and *.part names and waits for files to
-- settle) never reads half a file. UIDs contain only digits and dots, so they are safe as path parts; nothing
-- from the patient's name is used.
--
-- Orthanc configuration:  "LuaScripts" : [ "/path/to/orthanc-export.lua" ],  "StableAge" : 60
-- Drop folder: the LDAE_DROP environment variable of the Orthanc process, else the default below.

local DROP = os.getenv('LDAE_DROP') or '/var/lib/ldae/incoming'

local function safe(uid)
  -- keep digits and dots only (a UID); anything else becomes '_'
  return (string.gsub(uid or 'unknown', '[^0-9.]', '_'))
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

// `distill convert`: a Hugging Face or OpenAI / open_clip checkpoint -> the engine's canonical
// safetensors (models/convert.h does the work; this is the command line around it).
#include <cstdio>
#include <filesystem>

#include "core/error.h"
#include "models/convert.h"
#include "tools/cli.h"

namespace distill::cli {

int cmd_convert(int argc, char** argv) {
  Args args("convert",
            {{"in", true, "checkpoint directory (config.json + model.safetensors) or file", ""},
             {"out", true, "output .safetensors file", ""},
             {"arch", true, "clip | clip-vision | clip-text | roberta | bert", "detected"},
             {"dtype", true, "f32 | bf16", "f32"},
             {"force", false, "replace an existing output file", ""},
             {"help", false, "show this help", ""}});
  args.parse(argc, argv, 2);
  if (args.flag("help")) {
    std::fputs(args.help("Converts a Hugging Face (CLIPModel, CLIPVisionModel[WithProjection], "
                         "CLIPTextModel[WithProjection], RobertaModel, BertModel) or OpenAI / "
                         "open_clip checkpoint into distill's safetensors, with the model "
                         "config in its metadata. Every missing, unexpected or mis-shaped "
                         "tensor is named.")
                   .c_str(),
               stdout);
    return 0;
  }
  if (!args.positional().empty())
    throw UsageError("distill convert: unexpected argument '" + args.positional()[0] + "'");
  const auto in = args.value("in");
  const auto out = args.value("out");
  if (!in) throw UsageError("distill convert: --in PATH is required");
  if (!out) throw UsageError("distill convert: --out FILE is required");
  models::ConvertOptions opts;
  opts.arch = args.value_or("arch", "");
  const std::string dtype = args.value_or("dtype", "f32");
  if (dtype != "f32" && dtype != "bf16")
    throw UsageError("distill convert: --dtype must be f32 or bf16, got '" + dtype + "'");
  opts.dtype = dtype == "f32" ? DType::F32 : DType::BF16;
  namespace fs = std::filesystem;
  if (fs::exists(*out) && !args.flag("force"))
    throw UsageError("distill convert: " + *out +
                     " exists; pass --force to replace it (it is left untouched)");
  if (fs::exists(*out) && fs::equivalent(*out, *in))
    throw UsageError("distill convert: --out " + *out + " is the input file");

  const models::ConvertedModel m = models::convert_checkpoint(*in, opts);
  models::save_converted(m, *out);
  int64_t params = 0;
  for (const auto& [n, t] : m.tensors) params += t.numel();
  std::printf("converted %s (%s naming) -> %s\n  arch %s, %zu tensors, %lld values, %s\n",
              m.source.c_str(), m.naming.c_str(), out->c_str(), m.spec.arch.c_str(),
              m.tensors.size(), static_cast<long long>(params), dtype.c_str());
  for (const auto& note : m.notes) std::printf("  note: %s\n", note.c_str());
  return 0;
}

}  // namespace distill::cli

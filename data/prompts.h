// Class names and prompt templates shipped with the project as text files, one entry a line:
//   data/classnames/{cifar10,cifar100,imagenet,fashion_mnist}.txt   (CLIP's names)
//   data/templates/{cifar,imagenet}.txt                             ("a photo of a {}." ...)
// They are found in DISTILL_DATA_DIR when set, else in the source tree's data/ folder.
#pragma once

#include <string>
#include <vector>

namespace distill::data {

// The folder holding classnames/ and templates/.
std::string resource_dir();
// Non-empty lines of a text file (trailing \r removed); throws naming the file.
std::vector<std::string> read_nonempty_lines(const std::string& path);
// By name: "cifar10" -> classnames/cifar10.txt; "cifar" -> templates/cifar.txt.
std::vector<std::string> load_class_names(const std::string& dataset);
std::vector<std::string> load_templates(const std::string& name);
// Replaces every "{}" in the template with the class name.
std::string fill_template(const std::string& templ, const std::string& class_name);

}  // namespace distill::data

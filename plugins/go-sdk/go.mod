module cordon

go 1.24

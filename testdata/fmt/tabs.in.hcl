site "dr" {
	provider	=	"local"
	root = "sites/dr"
	nested {
		x = 1
	}
}
GREETING = "from a .pth directory"

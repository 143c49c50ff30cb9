package dev.classcache.demo.owner;

public class NotFoundException extends RuntimeException {

	private static final long serialVersionUID = 1L;

	public NotFoundException(String kind, Long id) {
		super(kind + " " + id + " not found");
	}

}
